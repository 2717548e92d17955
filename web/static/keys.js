// The API keys page (templates/keys/index.html): the copy button for a new key, and a
// confirmation before a key is revoked.
document.querySelectorAll("form[data-confirm]").forEach(function (form) {
  form.addEventListener("submit", function (event) {
    if (!confirm(form.dataset.confirm)) event.preventDefault();
  });
});
document.querySelectorAll("[data-copy]").forEach(function (button) {
  button.addEventListener("click", async function () {
    const input = document.querySelector(button.dataset.copy);
    const said = button.parentElement.querySelector("[data-copied]");
    try {
      await navigator.clipboard.writeText(input.value);
      said.textContent = "Copied.";
    } catch (e) {
      input.select();
      said.textContent = "Press Ctrl+C (⌘C) to copy.";
    }
  });
});
