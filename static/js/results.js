// Score cutoff that filters the grid as the slider moves (the form still works without script).
(function () {
  const slider = document.getElementById("min_score");
  if (!slider) return;
  const out = document.getElementById("min-score-out");
  slider.addEventListener("input", () => {
    const min = parseFloat(slider.value);
    out.textContent = min.toFixed(2);
    document.querySelectorAll(".results li[data-score]").forEach((li) => {
      li.hidden = parseFloat(li.dataset.score) < min;
    });
  });
  slider.addEventListener("change", () => slider.form.requestSubmit());
})();
