/*
 * Landing pages: opt-in forms, the visit beacon and countdowns.
 *
 * Progressive enhancement only. Without this file every form still posts and the server
 * answers with the thanks page (or the page again, with the error). With it, a form is
 * sent by fetch and answered in place, attribution fields are filled in the browser, one
 * visit is counted per page view, and countdowns tick.
 */
(function () {
  "use strict";

  var UTM_FIELDS = ["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"];
  var lang = document.documentElement.lang || undefined;

  function field(form, name) {
    var element = form.elements.namedItem(name);
    return element && element.tagName === "INPUT" ? element : null;
  }

  function setIfEmpty(input, value) {
    if (input && !input.value && value) input.value = value;
  }

  /* --- Attribution ------------------------------------------------------------------ */

  function visitorTimeZone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (error) {
      return "";
    }
  }

  // The page's own address comes back as the referrer after a failed plain post; that
  // says nothing about where the visitor came from.
  function externalReferrer(pageUrl) {
    var raw = document.referrer;
    if (!raw) return "";
    try {
      var url = new URL(raw);
      if (url.origin === location.origin && pageUrl && url.pathname.indexOf(pageUrl) === 0) {
        return "";
      }
    } catch (error) {
      return "";
    }
    return raw.slice(0, 1000);
  }

  function fillAttribution(form, pageUrl) {
    setIfEmpty(field(form, "time_zone"), visitorTimeZone());
    setIfEmpty(field(form, "referrer"), externalReferrer(pageUrl));
    // A cached page may carry the query string of whoever first asked for it: the
    // address bar is the truth whenever it names a campaign.
    var params = new URLSearchParams(location.search);
    var named = UTM_FIELDS.some(function (name) {
      return params.has(name);
    });
    if (!named) return;
    UTM_FIELDS.forEach(function (name) {
      var input = field(form, name);
      if (input) input.value = (params.get(name) || "").slice(0, 200);
    });
  }

  /* --- Sending ---------------------------------------------------------------------- */

  function showError(form, message) {
    var region = form.querySelector("[data-optin-error]");
    if (!region) return;
    var alert = document.createElement("p");
    alert.className = "alert alert--error lp-optin__alert";
    alert.textContent = message;
    // Emptied first so the same message sent twice is announced twice.
    region.textContent = "";
    window.setTimeout(function () {
      region.appendChild(alert);
    }, 50);
    var email = field(form, "email");
    if (email) email.setAttribute("aria-describedby", region.id);
  }

  function showSuccess(form, message) {
    var region = form.parentNode.querySelector("[data-optin-success]");
    form.hidden = true;
    if (!region) return;
    var icon =
      '<svg class="lp-optin__success-icon" viewBox="0 0 24 24" aria-hidden="true" focusable="false">' +
      '<circle cx="12" cy="12" r="11" fill="currentColor" opacity=".14"/>' +
      '<path d="m7 12.5 3.2 3.2L17 9" fill="none" stroke="currentColor" stroke-width="2.2" ' +
      'stroke-linecap="round" stroke-linejoin="round"/></svg>';
    var text = document.createElement("p");
    text.className = "lp-optin__success-text";
    text.textContent = message;
    region.innerHTML = icon;
    region.appendChild(text);
    region.classList.add("is-shown");
    // The button that had focus is gone with the form; the message takes it.
    region.focus();
  }

  function setSending(form, button, sending) {
    form.toggleAttribute("data-sending", sending);
    form.setAttribute("aria-busy", sending ? "true" : "false");
    // aria-disabled rather than disabled: a disabled button drops keyboard focus.
    if (button) button.setAttribute("aria-disabled", sending ? "true" : "false");
  }

  function csrfToken(form) {
    var input = form.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function send(form, event) {
    if (!window.fetch || !window.FormData || !window.URLSearchParams) return; // the browser posts the form itself
    event.preventDefault();
    if (form.hasAttribute("data-sending")) return;
    var button = form.querySelector("[data-optin-submit]");
    var genericError = form.getAttribute("data-message-error");
    setSending(form, button, true);
    // Sent url-encoded, as the plain form post is: the same body either way, and
    // smaller than multipart.
    fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken(form) },
    })
      .then(function (response) {
        return response.json().then(
          function (data) {
            return data;
          },
          function () {
            return { ok: false, message: genericError };
          }
        );
      })
      .then(function (data) {
        if (data && data.ok) {
          showSuccess(form, data.message);
        } else {
          setSending(form, button, false);
          showError(form, (data && data.message) || genericError);
        }
      })
      .catch(function () {
        setSending(form, button, false);
        showError(form, form.getAttribute("data-message-offline") || genericError);
      });
  }

  function enhanceForm(form, pageUrl) {
    fillAttribution(form, pageUrl);
    form.addEventListener("submit", function (event) {
      fillAttribution(form, pageUrl);
      send(form, event);
    });
    // After a failed plain post the page opens at the form: read the error out.
    var alert = form.querySelector("[data-optin-error] .alert");
    if (alert) alert.focus({ preventScroll: true });
  }

  /* --- Visit beacon ------------------------------------------------------------------- */

  function countVisit(root) {
    var url = root.getAttribute("data-visit-url");
    if (!url || !navigator.sendBeacon) return;
    try {
      navigator.sendBeacon(url);
    } catch (error) {
      /* counting is best effort */
    }
  }

  /* --- Countdowns ---------------------------------------------------------------------- */

  function startCountdown(section) {
    var time = section.querySelector("[data-countdown-time]");
    var clock = section.querySelector("[data-countdown-clock]");
    var ended = section.querySelector("[data-countdown-ended]");
    var deadlineLine = section.querySelector("[data-countdown-deadline]");
    if (!time || !clock) return;
    var deadline = new Date(time.getAttribute("datetime")).getTime();
    if (isNaN(deadline)) return;

    // The server wrote the deadline in the site's time zone; show the visitor's own.
    try {
      time.textContent = new Intl.DateTimeFormat(lang, {
        weekday: "long",
        day: "numeric",
        month: "long",
        hour: "numeric",
        minute: "2-digit",
        timeZoneName: "short",
      }).format(new Date(deadline));
    } catch (error) {
      /* keep the server's text */
    }

    var pad = new Intl.NumberFormat(lang, { minimumIntegerDigits: 2 });
    var plain = new Intl.NumberFormat(lang);
    var units = {};
    ["days", "hours", "minutes", "seconds"].forEach(function (name) {
      units[name] = clock.querySelector('[data-unit="' + name + '"]');
    });
    var timer = null;

    function tick() {
      var left = Math.max(0, Math.floor((deadline - Date.now()) / 1000));
      if (left === 0) {
        window.clearInterval(timer);
        clock.hidden = true;
        if (deadlineLine) deadlineLine.hidden = true;
        if (ended) ended.hidden = false;
        return;
      }
      var values = {
        days: Math.floor(left / 86400),
        hours: Math.floor((left % 86400) / 3600),
        minutes: Math.floor((left % 3600) / 60),
        seconds: left % 60,
      };
      Object.keys(values).forEach(function (name) {
        if (units[name]) {
          units[name].textContent = (name === "days" ? plain : pad).format(values[name]);
        }
      });
    }

    clock.hidden = false;
    tick();
    timer = window.setInterval(tick, 1000);
  }

  /* --- Start ------------------------------------------------------------------------- */

  function start() {
    var root = document.querySelector("[data-page-url]");
    var pageUrl = root ? root.getAttribute("data-page-url") : "";
    document.querySelectorAll("form[data-optin-form]").forEach(function (form) {
      enhanceForm(form, pageUrl);
    });
    document.querySelectorAll("[data-countdown]").forEach(startCountdown);
    if (root) countVisit(root);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
