// Live progress: poll running jobs and update their bars; reload when one finishes (new versions, node state).
(function () {
  const rows = () => Array.from(document.querySelectorAll("tr[data-job]"))
    .filter((r) => ["queued", "running"].includes(r.dataset.state));
  async function poll() {
    const active = rows();
    if (!active.length) return;
    let finished = false;
    for (const row of active) {
      const r = await fetch(`/api/v1/jobs/${row.dataset.job}`, { credentials: "same-origin" });
      if (!r.ok) continue;
      const job = await r.json();
      row.querySelector("progress").value = job.percent;
      row.querySelector(".stage").textContent = `${Math.round(job.percent)} % ${job.stage}`;
      row.querySelector(".state").textContent = job.state;
      if (!["queued", "running"].includes(job.state)) finished = true;
    }
    if (finished) window.location.reload();
    else setTimeout(poll, 1000);
  }
  setTimeout(poll, 1000);
})();
