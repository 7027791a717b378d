// Keyboard for WAI-ARIA tabs (dashboards.pages.common.tabs): Left/Right (and Up/Down) move to the
// previous/next tab, Home/End to the first/last, and select it, as the ARIA practices describe.
(function () {
  const KEYS = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 };
  document.addEventListener("keydown", function (event) {
    const tab = event.target.closest && event.target.closest('[role="tab"]');
    if (!tab) return;
    const list = tab.closest('[role="tablist"]');
    const all = Array.from(list.querySelectorAll('[role="tab"]'));
    let index = all.indexOf(tab);
    if (event.key in KEYS) {
      index = (index + KEYS[event.key] + all.length) % all.length;
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
