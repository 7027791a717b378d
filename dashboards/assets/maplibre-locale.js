// Plotly's maps are drawn by MapLibre, which labels its canvas and controls in English
// ("Map", "Toggle attribution"...) whatever the page's language: say them in French on French
// pages, as the rest of the page is (RGAA: accessible names in the page's language).
(function () {
  const FRENCH = {
    "Map": "Carte",
    "Map marker": "Repère sur la carte",
    "Toggle attribution": "Afficher ou masquer les sources de la carte",
    "Map feedback": "Signaler une erreur de la carte",
    "MapLibre logo": "Logo MapLibre",
    "Zoom in": "Zoom avant",
    "Zoom out": "Zoom arrière",
    "Drag to rotate map, click to reset north": "Glisser pour tourner la carte, cliquer pour revenir au nord",
    "Enter fullscreen": "Plein écran",
    "Exit fullscreen": "Quitter le plein écran",
  };
  const NAMES = ["aria-label", "title", "aria-roledescription"];

  function translate() {
    if (!document.documentElement.lang.startsWith("fr")) return;
    for (const element of document.querySelectorAll(".maplibregl-map, .maplibregl-map *")) {
      for (const name of NAMES) {
        const value = element.getAttribute(name);
        // Only English values are replaced, so the observer's own changes end the loop.
        if (value !== null && Object.prototype.hasOwnProperty.call(FRENCH, value)) {
          element.setAttribute(name, FRENCH[value]);
        }
      }
    }
  }

  new MutationObserver(translate).observe(document.documentElement, {
    subtree: true,
    childList: true,
    attributes: true,
    attributeFilter: NAMES,
  });
})();
