"use strict";
// The dashboard's video list: poll while anything renders and redraw a job when its status
// changes; ask before deleting. The balance goes to every open tab through app.js.
(function () {
  const list = document.getElementById("jobs");
  if (!list) return;
  const pending = () => list.querySelector('[data-status="queued"], [data-status="processing"]');

  function render(job, item) {
    if (item.dataset.status === job.status) {
      const bar = item.querySelector("progress");
      if (bar && bar.value !== job.progress) { bar.value = job.progress; bar.textContent = job.progress + "%"; }
      return;
    }
    item.dataset.status = job.status;
    const status = item.querySelector(".status");
    status.className = "status status-" + job.status;
    status.textContent = job.status;  // an aria-live region: screen readers hear the change
    if (job.status === "queued" || job.status === "processing") return;
    const bar = item.querySelector("progress");
    if (bar) bar.remove();
    const video = item.querySelector("video");
    if (job.status === "completed" && video) {
      if (job.poster_url) video.poster = job.poster_url;
      video.src = job.video_url;
      video.hidden = false;
      const download = item.querySelector(".download");
      if (download) download.hidden = false;
    } else if (job.status === "failed") {
      if (video) video.remove();
      const error = document.createElement("p");
      error.className = "field-error";
      error.textContent = job.error || "Render failed — we refunded your credit.";
      item.querySelector(".job-head").after(error);
    }
    const actions = item.querySelector(".job-actions");
    if (actions) actions.hidden = false;
  }

  async function poll() {
    if (!pending()) return;
    try {
      const response = await fetch(list.dataset.pollUrl, {headers: {Accept: "application/json"}});
      if (response.ok) {
        const data = await response.json();
        for (const job of data.jobs) {
          const item = list.querySelector('[data-job-id="' + job.job_id + '"]');
          if (item) render(job, item);
        }
        if (window.storyGenius) window.storyGenius.showCredits(data.credits_remaining, true);
      }
    } catch (e) { /* offline for a moment: try again on the next tick */ }
    setTimeout(poll, 2000);
  }
  setTimeout(poll, 1000);

  list.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });
})();
