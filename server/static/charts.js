// Charts: plotly.js figures built by the server (server/plots.py). Inline ones carry their figure in data-figure;
// the live-skill charts are fetched from data-src (read from the house's InfluxDB), so the page never waits for it.
(function () {
  const config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
  function draw(el, fig) {
    if (!fig.data.length) {
      el.textContent = "No figures yet: the agent writes forecast_skill once its forecasts have been scored.";
      el.classList.add("empty");
      return;
    }
    Plotly.newPlot(el, fig.data, fig.layout, config).then(() => el.setAttribute("data-drawn", "1"));
  }
  document.querySelectorAll(".chart[data-figure]").forEach((el) => draw(el, JSON.parse(el.dataset.figure)));
  const live = document.getElementById("live-charts");
  if (!live) return;
  fetch(live.dataset.src, { credentials: "same-origin" })
    .then((r) => r.json())
    .then((doc) => {
      if (doc.error) throw new Error(doc.error);
      live.querySelectorAll(".chart[data-key]").forEach((el) => draw(el, JSON.parse(doc[el.dataset.key])));
    })
    .catch((err) => {
      const p = document.querySelector(".chart-error");
      p.textContent = `Live skill charts: ${err.message}`;
      p.hidden = false;
    });
})();
