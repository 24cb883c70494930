// Keyboard review. On a cluster page: j/k move, x toggles, Shift+A selects all, a/r/n/e act, s skips to the next
// cluster; everywhere on the review pages: u undoes the last decision, ? shows the shortcuts. Handlers are
// delegated to the document: after a decision htmx swaps in the next cluster and they go on working.
(function () {
  const form = () => document.getElementById("review");
  const cards = () => [...document.querySelectorAll("#review .review-card")];
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
    // A click, not requestSubmit: htmx sends the clicked button's name and value with the form.
    const button = form() && form().querySelector(`button[value="${action}"]`);
    if (button) button.click();
  }
  function clickIf(id) {
    const el = document.getElementById(id);
    if (el) el.click();
  }
  function showHelp() {
    const help = document.getElementById("keys-help");
    if (help && !help.open) help.showModal();
  }

  document.addEventListener("change", (e) => {
    if (e.target.matches("#review input[type=checkbox]")) e.target.closest(".review-card").classList.toggle("selected", e.target.checked);
  });
  document.addEventListener("click", (e) => {
    if (e.target.closest("[data-help]")) showHelp();
  });
  document.addEventListener("keydown", (e) => {
    if (e.target.matches("#landmark")) {
      if (e.key === "Enter") { e.preventDefault(); submit("relabel"); }
      if (e.key === "Escape") { e.target.blur(); focusCard(current); }
      return;
    }
    if (e.target.matches("input[type=text], input[type=number], input:not([type]), input[list], select, textarea") ||
        e.ctrlKey || e.metaKey || e.altKey || document.querySelector("dialog[open]")) return;
    const all = cards();
    const here = all.indexOf(document.activeElement);
    if (here >= 0) current = here;
    switch (e.key) {
      case "?": showHelp(); break;
      case "u": clickIf("undo-last"); break;
      case "s": clickIf("skip"); break;
      case "j": case "ArrowRight": focusCard(current + 1); break;
      case "k": case "ArrowLeft": focusCard(current - 1); break;
      case "x": case " ": if (all[current]) toggle(all[current]); else return; break;
      case "A": all.forEach((c) => { if (!c.querySelector("input").checked) toggle(c); }); break;
      case "a": submit("accept"); break;
      case "n": submit("not_landmark"); break;
      case "e": submit("keep"); break;
      case "r": { const input = document.getElementById("landmark"); if (input) input.focus(); else return; break; }
      default: return;
    }
    e.preventDefault();
  });
  // The next cluster came in: start from its first photo.
  document.addEventListener("htmx:afterSettle", (e) => {
    if (e.detail.target && e.detail.target.id === "review-area") { current = 0; focusCard(0); }
  });
})();
