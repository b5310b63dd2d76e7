// Charts: plotly.js figures built by the server (server/plots.py). Inline ones carry their figure in data-figure;
// the live-skill charts and the homeowner's view are fetched from data-src (read from the house's InfluxDB), so the
// page never waits for the house.
(function () {
  const config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
  function draw(el, fig, empty) {
    if (!fig.data.length) {
      el.textContent = empty || "No figures yet: the agent writes forecast_skill once its forecasts have been scored.";
      el.classList.add("empty");
      return;
    }
    Plotly.newPlot(el, fig.data, fig.layout, config).then(() => el.setAttribute("data-drawn", "1"));
  }
  function load(box, errorSelector, label, fill) {
    if (!box) return;
    fetch(box.dataset.src, { credentials: "same-origin" })
      .then((r) => r.json())
      .then((doc) => {
        if (doc.error) throw new Error(doc.error);
        fill(doc);
      })
      .catch((err) => {
        const p = document.querySelector(errorSelector);
        p.textContent = `${label}: ${err.message}`;
        p.hidden = false;
      });
  }
  document.querySelectorAll(".chart[data-figure]").forEach((el) => draw(el, JSON.parse(el.dataset.figure)));
  load(document.getElementById("live-charts"), ".chart-error", "Live skill charts", (doc) => {
    document.querySelectorAll("#live-charts .chart[data-key]").forEach((el) => draw(el, JSON.parse(doc[el.dataset.key])));
  });
  const home = document.getElementById("home");
  load(home, ".home-error", "The house's energy and forecast", (doc) => {
    document.getElementById("home-figures").innerHTML = doc.html; // rendered (and escaped) by the server
    document.querySelectorAll("#home-charts .chart[data-key]").forEach((el) =>
      draw(el, JSON.parse(doc[el.dataset.key]), "No energy flow or forecasts in the house's InfluxDB yet."));
  });
  const run = document.querySelector("#run-choice select");
  if (run) run.addEventListener("change", () => run.form.submit());
})();
