// Search by photo from any page: drop a file on the page, paste an image, or pick one.
(function () {
  const form = document.querySelector("form[data-upload]");
  if (!form) return;
  const input = form.querySelector("input[type=file]");
  function send(file) {
    if (!file || !file.type.startsWith("image/")) return;
    const data = new DataTransfer();
    data.items.add(file);
    input.files = data.files;
    form.requestSubmit();
  }
  input.addEventListener("change", () => { if (input.files.length) form.requestSubmit(); });
  document.addEventListener("dragover", (e) => { e.preventDefault(); document.body.classList.add("dragging"); });
  document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) document.body.classList.remove("dragging"); });
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    document.body.classList.remove("dragging");
    send(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    if (e.target.matches("input, textarea")) return;
    const item = [...e.clipboardData.items].find((i) => i.type.startsWith("image/"));
    if (item) send(item.getAsFile());
  });
})();
