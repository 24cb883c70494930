// Forms with data-confirm ask before they submit (cancel a job, delete a search). Delegated, so forms that
// htmx swaps in later ask too.
document.addEventListener("submit", (e) => {
  const message = e.target.dataset && e.target.dataset.confirm;
  if (message && !window.confirm(message)) e.preventDefault();
}, true);
