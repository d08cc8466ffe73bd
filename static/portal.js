// Filters the portal's tiles as you type. Progressive enhancement: without this script the
// search form submits (GET /?q=...) and the server hides the same tiles.
(function () {
  "use strict";
  var input = document.getElementById("q");
  var status = document.getElementById("filter-status");
  if (!input || !status) { return; }
  var tiles = Array.prototype.slice.call(document.querySelectorAll("li[data-search]"));
  var sections = Array.prototype.slice.call(document.querySelectorAll("section.stores"));
  var total = tiles.length;
  function apply() {
    var words = input.value.toLowerCase().split(/\s+/).filter(function (w) { return w.length > 0; });
    var shown = 0;
    tiles.forEach(function (t) {
      var text = t.getAttribute("data-search");
      var ok = words.every(function (w) { return text.indexOf(w) >= 0; });
      t.hidden = !ok;
      if (ok) { shown += 1; }
    });
    sections.forEach(function (s) {
      s.hidden = !s.querySelector("li[data-search]:not([hidden])");
    });
    status.textContent = shown === total
      ? total + (total === 1 ? " store" : " stores")
      : shown + " of " + total + " stores match";
  }
  input.addEventListener("input", apply);
  // Escape clears the search (as in Okta's and Entra's launchers).
  input.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && input.value !== "") { input.value = ""; apply(); }
  });
})();
