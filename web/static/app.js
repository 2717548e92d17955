"use strict";
// Keeps the credits badge current in every open tab: a page that learns the balance (on
// load, after a generate, from the dashboard's poll) tells the others over a
// BroadcastChannel, and each visible tab asks the server every 15 s and when it is shown.
(function () {
  const badge = document.getElementById("credits-badge");
  if (!badge) return;
  const channel = "BroadcastChannel" in window ? new BroadcastChannel("story-genius-credits") : null;

  function showCredits(value, tellOthers) {
    const credits = Number(value);
    if (!Number.isInteger(credits) || credits < 0) return;
    if (String(credits) !== badge.dataset.credits) {
      badge.dataset.credits = String(credits);
      badge.textContent = credits + (credits === 1 ? " credit" : " credits");
      document.querySelectorAll("[data-credits-text]").forEach((el) => { el.textContent = String(credits); });
    }
    if (tellOthers && channel) channel.postMessage({credits: credits});
  }
  window.storyGenius = {showCredits: showCredits};
  if (channel) channel.onmessage = (event) => showCredits(event.data && event.data.credits, false);
  // a page just served carries the newest balance (a generate redirects to a fresh one)
  showCredits(badge.dataset.credits, true);

  async function refresh() {
    if (document.visibilityState !== "visible") return;
    try {
      const response = await fetch(badge.dataset.creditsUrl, {headers: {Accept: "application/json"}, cache: "no-store"});
      if (response.ok) showCredits((await response.json()).credits_remaining, true);
    } catch (e) { /* offline for a moment: the next tick tries again */ }
  }
  setInterval(refresh, 15000);
  document.addEventListener("visibilitychange", refresh);
})();
