// Live pages (docs/console.md): a page with <div id="live" data-refresh="SECONDS">
// reloads itself every SECONDS until the user pauses it with the #live-toggle button
// (WCAG 2.2.1: timing the user can turn off); the pause holds for the browser tab.
// Without JavaScript the page is the same, reloaded by hand.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var button = document.getElementById("live-toggle");
  var every = live ? parseInt(live.getAttribute("data-refresh"), 10) : 0;
  if (!(every >= 1) || !button) {
    return;
  }
  var key = "atoll-live-paused";
  // storage may be refused (a browser that blocks site data): the pause then holds
  // for this page only, and the page still reloads and pauses
  function load() {
    try { return window.sessionStorage.getItem(key) === "1"; } catch (e) { return false; }
  }
  function save(value) {
    try { window.sessionStorage.setItem(key, value ? "1" : "0"); } catch (e) { /* kept */ }
  }
  var paused = load();
  var timer = null;
  function show() {
    button.textContent = paused ? "Resume live updates" : "Pause live updates";
    button.setAttribute("aria-pressed", paused ? "true" : "false");
  }
  function arm() {
    window.clearTimeout(timer);
    if (!paused) {
      timer = window.setTimeout(function () { window.location.reload(); }, every * 1000);
    }
  }
  button.hidden = false;
  button.addEventListener("click", function () {
    paused = !paused;
    save(paused);
    show();
    arm();
  });
  show();
  arm();
}());
