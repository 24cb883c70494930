// Search by photo from any page: drop a file on the page, paste an image, or pick one. Each upload form
// submits itself when a photo is picked or dropped on it; a drop or paste elsewhere goes to the page's
// main upload form (the one in <main>, as on /search/), else the header's. Anything that is not an image
// (by its type) is refused on the spot, with a message beside the form it was meant for.
(function () {
  const forms = [...document.querySelectorAll("form[data-upload]")];
  if (!forms.length) return;
  const main = document.querySelector("main form[data-upload]") || forms[0];

  function say(form, message) {
    let box = form.querySelector(".upload-error");
    if (!box) {
      box = document.createElement("p");
      box.className = "error upload-error";
      box.setAttribute("role", "alert");
      form.appendChild(box);
    }
    box.textContent = message;
    box.hidden = !message;
  }

  function send(form, file) {
    if (!file) return;
    // A type the browser does not know (empty) goes to the server, which checks the content anyway.
    if (file.type && !file.type.startsWith("image/")) {
      say(form, `“${file.name || "That"}” is not an image: drop, paste or pick a photo (JPEG, PNG, WebP…).`);
      return;
    }
    say(form, "");
    const data = new DataTransfer();
    data.items.add(file);
    form.querySelector("input[type=file]").files = data.files;
    form.requestSubmit();
  }

  forms.forEach((form) => {
    const input = form.querySelector("input[type=file]");
    input.addEventListener("change", () => { if (input.files.length) send(form, input.files[0]); });
  });
  document.addEventListener("dragover", (e) => { e.preventDefault(); document.body.classList.add("dragging"); });
  document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) document.body.classList.remove("dragging"); });
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    document.body.classList.remove("dragging");
    const target = e.target.closest ? e.target.closest("form[data-upload]") : null;
    send(target || main, e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    if (e.target.matches("input, textarea")) return;
    const file = [...e.clipboardData.files][0];
    if (file) send(main, file);
  });
})();
