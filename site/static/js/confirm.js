/*
 * The confirmation page: press "Confirm my subscription" for the visitor.
 *
 * The link in the email only shows this page; the POST confirms. Mail scanners fetch
 * links without running scripts, so they never confirm anyone; a person's browser runs
 * this and is through in one step. Without JavaScript the button does the same.
 */
(function () {
  "use strict";

  function start() {
    var form = document.querySelector("form[data-autosubmit]");
    if (!form) return;
    var button = form.querySelector("[data-submit]");
    var status = form.querySelector("[data-status]");
    var label = button ? button.textContent : "";

    form.addEventListener("submit", function (event) {
      if (form.hasAttribute("data-sent")) {
        event.preventDefault();
        return;
      }
      form.setAttribute("data-sent", "");
      if (button) button.setAttribute("aria-disabled", "true");
      if (status) status.textContent = form.getAttribute("data-busy-text") || "";
    });

    // Back from the next page (the browser's page cache): let the button work again.
    window.addEventListener("pageshow", function (event) {
      if (!event.persisted) return;
      form.removeAttribute("data-sent");
      if (button) {
        button.removeAttribute("aria-disabled");
        button.textContent = label;
      }
      if (status) status.textContent = "";
    });

    if (typeof form.requestSubmit === "function") {
      form.requestSubmit();
    } else {
      form.setAttribute("data-sent", "");
      form.submit();
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
