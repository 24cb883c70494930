// The 2-D map: pointing at (or tabbing to) a dot shows its landmark and photo id beside it.
(function () {
  const map = document.querySelector("svg.map");
  const label = document.getElementById("map-label");
  if (!map || !label) return;
  const wrap = label.parentElement;
  function show(circle) {
    if (!circle) return;
    label.textContent = circle.dataset.label;
    label.hidden = false;
    const dot = circle.getBoundingClientRect(), box = wrap.getBoundingClientRect();
    const left = Math.min(dot.right - box.left + 6, box.width - label.offsetWidth);
    label.style.left = Math.max(0, left) + "px";
    label.style.top = Math.max(0, dot.top - box.top - label.offsetHeight - 4) + "px";
  }
  map.addEventListener("mouseover", (e) => show(e.target.closest("circle")));
  map.addEventListener("focusin", (e) => show(e.target.querySelector("circle")));
  map.addEventListener("mouseleave", () => { label.hidden = true; });
  map.addEventListener("focusout", () => { label.hidden = true; });
})();
