// When the session has expired, the server answers the page's callbacks with 401: send the
// user to the sign-in form (coming back to this page after) rather than leaving a dead page.
(function () {
  const originalFetch = window.fetch;
  window.fetch = async function (...args) {
    const response = await originalFetch.apply(this, args);
    const url = typeof args[0] === "string" ? args[0] : (args[0] && args[0].url) || "";
    if (response.status === 401 && url.indexOf("_dash-update-component") !== -1) {
      const next = window.location.pathname + window.location.search;
      window.location.assign("/login?next=" + encodeURIComponent(next));
    }
    return response;
  };
})();
