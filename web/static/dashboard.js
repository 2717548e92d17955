"use strict";
// Poll while anything is rendering; redraw a job when its status changes.
(function () {
  const list = document.getElementById("jobs");
  if (!list) return;
  const badge = document.getElementById("credits-badge");
  const pending = () => list.querySelector('[data-status="queued"], [data-status="processing"]');
  function render(job, item) {
    item.dataset.status = job.status;
    item.querySelector(".status").className = "status status-" + job.status;
    item.querySelector(".status").textContent = job.status;
    const bar = item.querySelector("progress");
    if (job.status === "queued" || job.status === "processing") {
      if (bar) { bar.value = job.progress; bar.textContent = job.progress + "%"; }
      return;
    }
    if (bar) bar.remove();
    if (job.status === "completed" && !item.querySelector("video")) {
      const video = document.createElement("video");
      video.controls = true; video.playsInline = true; video.preload = "metadata"; video.src = job.video_url;
      const link = document.createElement("a");
      link.className = "small"; link.href = job.video_url; link.download = ""; link.textContent = "Download MP4";
      item.append(video, link);
    } else if (job.status === "failed" && !item.querySelector(".field-error")) {
      const error = document.createElement("p");
      error.className = "field-error";
      error.textContent = job.error || "Render failed — we refunded your credit.";
      item.append(error);
    }
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
        if (badge) {
          badge.dataset.credits = data.credits_remaining;
          badge.textContent = data.credits_remaining + (data.credits_remaining === 1 ? " credit" : " credits");
        }
      }
    } catch (e) { /* offline for a moment: try again on the next tick */ }
    setTimeout(poll, 2000);
  }
  setTimeout(poll, 1000);
})();
