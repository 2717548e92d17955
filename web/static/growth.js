"use strict";
// Copy buttons on the referrals page: <button data-copies="ID"> copies the value of the
// input whose id is ID (no inline script: the Content-Security-Policy forbids it).
document.querySelectorAll("button[data-copies]").forEach((button) => {
  button.addEventListener("click", async () => {
    const field = document.getElementById(button.dataset.copies);
    if (!field) return;
    try {
      await navigator.clipboard.writeText(field.value);
      button.textContent = "Copied";
    } catch (e) {
      field.select();  // no clipboard permission: leave it selected for Ctrl-C
    }
  });
});
