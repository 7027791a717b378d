// Keyboard for the button groups of dashboards.pages.common.choices (WAI-ARIA tabs and radio
// groups): Left/Right and Up/Down move to the previous/next button, Home/End to the first/last,
// and choose it, as the ARIA authoring practices describe for both patterns.
(function () {
  const STEP = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 };
  document.addEventListener("keydown", function (event) {
    const item = event.target.closest && event.target.closest('[role="tab"], [role="radio"]');
    if (!item) return;
    const group = item.closest('[role="tablist"], [role="radiogroup"]');
    if (!group) return;
    const all = Array.from(group.querySelectorAll('[role="tab"], [role="radio"]'));
    let index = all.indexOf(item);
    if (event.key in STEP) {
      index = (index + STEP[event.key] + all.length) % all.length;
    } else if (event.key === "Home") {
      index = 0;
    } else if (event.key === "End") {
      index = all.length - 1;
    } else {
      return;
    }
    event.preventDefault();
    all[index].focus();
    all[index].click();
  });
})();
