/* Webinar pages: times in the visitor's own zone, the registration form's time zone,
   and the join link's countdown (in the registrant's zone, reloading when the doors
   open so the server can let them in). No inline script: the CSP allows only files. */
(function () {
  "use strict";

  function browserZone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (e) {
      return "";
    }
  }

  function format(moment, zone) {
    var options = {
      weekday: "long", year: "numeric", month: "long", day: "numeric",
      hour: "2-digit", minute: "2-digit", timeZoneName: "short"
    };
    if (zone) options.timeZone = zone;
    try {
      return new Intl.DateTimeFormat(document.documentElement.lang || undefined, options).format(moment);
    } catch (e) {
      delete options.timeZone;
      return new Intl.DateTimeFormat(undefined, options).format(moment);
    }
  }

  function webinarPage(root) {
    var zone = browserZone();
    // Evergreen slots of "the viewer's time zone" rules depend on the zone: ask the
    // server for this visitor's once.
    if (root.hasAttribute("data-evergreen") && root.getAttribute("data-zone-given") === "0" &&
        zone && zone !== root.getAttribute("data-viewer-zone")) {
      var url = new URL(window.location.href);
      url.searchParams.set("tz", zone);
      window.location.replace(url.toString());
      return;
    }
    root.querySelectorAll("[data-webinar-time-zone]").forEach(function (input) {
      if (!input.value) input.value = zone;
    });
    root.querySelectorAll("time[data-local-time]").forEach(function (element) {
      var moment = new Date(element.getAttribute("datetime"));
      if (!isNaN(moment)) element.textContent = format(moment, zone);
    });
    root.querySelectorAll("[data-webinar-zone-label]").forEach(function (element) {
      if (zone) element.textContent = zone;
    });
    var error = root.querySelector("[data-webinar-error]");
    if (error) error.focus();
  }

  function countdown(root) {
    var startsAt = new Date(root.getAttribute("data-starts-at"));
    var opensAt = new Date(root.getAttribute("data-opens-at"));
    var zone = root.getAttribute("data-zone") || browserZone();
    // The server's clock decides admission: measure time by it, not the device's.
    var skew = new Date(root.getAttribute("data-server-now")) - new Date();
    if (isNaN(skew)) skew = 0;
    var when = root.querySelector("[data-countdown-when]");
    if (when && !isNaN(startsAt)) when.textContent = format(startsAt, zone) + " (" + zone + ")";
    var left = root.querySelector("[data-countdown-left]");
    var reloaded = false;

    function pad(n) { return (n < 10 ? "0" : "") + n; }

    function tick() {
      var now = new Date(Date.now() + skew);
      if (now >= opensAt) {
        if (!reloaded) {
          reloaded = true;
          window.location.reload();
        }
        return;
      }
      var seconds = Math.max(0, Math.floor((startsAt - now) / 1000));
      var days = Math.floor(seconds / 86400);
      var rest = seconds % 86400;
      var text = (days ? days + "d " : "") + pad(Math.floor(rest / 3600)) + ":" +
        pad(Math.floor((rest % 3600) / 60)) + ":" + pad(rest % 60);
      if (left) left.textContent = left.getAttribute("data-prefix") + text;
    }

    if (left) left.setAttribute("data-prefix", left.getAttribute("data-prefix-text") || "");
    tick();
    window.setInterval(tick, 1000);
  }

  document.querySelectorAll("[data-webinar]").forEach(webinarPage);
  document.querySelectorAll("[data-countdown]").forEach(countdown);
})();
