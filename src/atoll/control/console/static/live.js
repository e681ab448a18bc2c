// Live pages (docs/console.md): a page with <div id="live" data-refresh="SECONDS">
// reloads itself every SECONDS until the user pauses it with the #live-toggle button
// (WCAG 2.2.1: timing the user can turn off); the pause holds for the browser tab.
// Without JavaScript the page is the same, reloaded by hand.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var button = document.getElementById("live-toggle");
  var every = live ? parseInt(live.getAttribute("data-refresh"), 10) : 0;
  if (!every || !button) {
    return;
  }
  var key = "atoll-live-paused";
  var paused = window.sessionStorage.getItem(key) === "1";
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
    window.sessionStorage.setItem(key, paused ? "1" : "0");
    show();
    arm();
  });
  show();
  arm();
}());
