// Live updates of the verification page: listens to the server-sent events
// of /verification/events (one event per state change, named after the
// state) and replaces the content of the aria-live status region with the
// server-rendered, escaped markup. Without JavaScript the page still works:
// a reload shows the current state.
(function () {
  "use strict";
  var region = document.getElementById("status");
  if (!region || !window.EventSource) return;
  var source = new EventSource(region.getAttribute("data-events"));
  var updates = 0;
  function show(e) {
    region.innerHTML = e.data;
    region.setAttribute("data-state", e.type);
    updates += 1;
    region.setAttribute("data-updates", String(updates));
    if (e.type !== "pending") source.close();
  }
  ["pending", "verified", "denied", "expired", "cancelled", "failed"].forEach(function (name) {
    source.addEventListener(name, show);
  });
})();
