// The dashboard's batch form (templates/app/_batch.html): the total cost follows the topics
// as they are typed, and the button says how many videos it makes, or is off when the
// credits do not cover the list.
(function () {
  const form = document.querySelector("form.batch");
  if (!form) return;
  const topics = form.querySelector("textarea");
  const cost = document.getElementById("batch-cost");
  const submit = document.getElementById("batch-submit");
  const max = Number(form.dataset.max);
  function update() {
    const credits = Number((document.getElementById("credits-badge") || form).dataset.credits);
    const count = topics.value.split("\n").filter(function (line) { return line.trim(); }).length;
    const plural = function (n, word) { return n + " " + word + (n === 1 ? "" : "s"); };
    let text = plural(count, "video") + " × 1 credit = " + plural(count, "credit") + "; you have " + credits + ".";
    if (count > max) text += " At most " + max + " at once.";
    else if (count > credits) text += " That is " + plural(count - credits, "credit") + " short.";
    cost.textContent = text;
    submit.textContent = count ? "Generate " + plural(count, "video") : "Generate all";
    submit.disabled = count === 0 || count > max || count > credits;
  }
  topics.addEventListener("input", update);
  update();
})();
