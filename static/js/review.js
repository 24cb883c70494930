// Keyboard review on a cluster page: j/k move, x toggles, Shift+A selects all, a/r/n/e act, u undoes.
(function () {
  const form = document.getElementById("review");
  if (!form) return;
  const cards = () => [...form.querySelectorAll(".review-card")];
  let current = 0;

  function focusCard(i) {
    const all = cards();
    if (!all.length) return;
    current = Math.max(0, Math.min(i, all.length - 1));
    all.forEach((c, n) => c.classList.toggle("current", n === current));
    all[current].focus();
  }
  function toggle(card) {
    const box = card.querySelector("input[type=checkbox]");
    box.checked = !box.checked;
    card.classList.toggle("selected", box.checked);
  }
  function submit(action) {
    const button = form.querySelector(`button[value="${action}"]`);
    if (button) form.requestSubmit(button);
  }
  form.addEventListener("change", (e) => {
    if (e.target.matches("input[type=checkbox]")) e.target.closest(".review-card").classList.toggle("selected", e.target.checked);
  });
  form.querySelector("#landmark").addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); submit("relabel"); }
    if (e.key === "Escape") { e.target.blur(); focusCard(current); }
  });
  document.addEventListener("keydown", (e) => {
    if (e.target.matches("input[type=text], input:not([type]), input[list], select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
    const all = cards();
    const here = all.indexOf(document.activeElement);
    if (here >= 0) current = here;
    switch (e.key) {
      case "j": case "ArrowRight": focusCard(current + 1); break;
      case "k": case "ArrowLeft": focusCard(current - 1); break;
      case "x": case " ": if (all[current]) toggle(all[current]); break;
      case "A": all.forEach((c) => { if (!c.querySelector("input").checked) toggle(c); }); break;
      case "a": submit("accept"); break;
      case "n": submit("not_landmark"); break;
      case "e": submit("keep"); break;
      case "r": form.querySelector("#landmark").focus(); break;
      case "u": { const undo = document.getElementById("undo-last"); if (undo) undo.click(); break; }
      default: return;
    }
    e.preventDefault();
  });
})();
