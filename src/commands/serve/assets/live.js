// dobsob dashboard: progressive enhancement only. Every page works without this script.
// 1. The live run panel (#live) is re-rendered by the server every few seconds; when a run starts or
//    ends, the page reloads so that every table is current.
// 2. Buttons with data-copy copy the text of the element they name.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (live) {
    var running = live.getAttribute("data-running") === "1";
    var tick = function () {
      fetch("/fragment/live", { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html === null) { return; }
          var box = document.createElement("div");
          box.innerHTML = html;
          var fresh = box.firstElementChild;
          if (!fresh) { return; }
          var now = fresh.getAttribute("data-running") === "1";
          if (now !== running) { window.location.reload(); return; }
          live.replaceWith(fresh);
          live = fresh;
        })
        .catch(function () { /* the server restarts or the network is down: try again next tick */ });
    };
    window.setInterval(tick, running ? 2000 : 10000);
  }
  var buttons = document.querySelectorAll("button[data-copy]");
  Array.prototype.forEach.call(buttons, function (b) {
    b.hidden = false;
    b.addEventListener("click", function () {
      var el = document.getElementById(b.getAttribute("data-copy"));
      if (!el || !navigator.clipboard) { return; }
      navigator.clipboard.writeText(el.textContent).then(function () {
        b.textContent = "Copied";
        window.setTimeout(function () { b.textContent = "Copy"; }, 1500);
      });
    });
  });
})();
