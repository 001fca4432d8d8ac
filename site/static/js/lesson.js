/*
 * Lodestone — lesson pages.
 *
 * 1. Video position: any <video data-lesson-progress="URL" data-position="S"> (the media
 *    app's player renders one) resumes at S seconds and reports where the learner is
 *    every ~10 s of playback, on pause, at the end and when the page is left.
 * 2. "Mark as complete" is sent in place; the button, the outline's tick and the
 *    progress bars follow. Without this script it is an ordinary form post.
 * 3. Release dates are shown in the reader's own time zone.
 */
(function () {
  "use strict";

  var SAVE_EVERY_MS = 10000;
  // Closer than this to either end, starting over is what the learner wants.
  var RESUME_MARGIN_S = 3;

  function csrfToken(scope) {
    var field = scope && scope.querySelector("input[name=csrfmiddlewaretoken]");
    if (field) return field.value;
    var meta = document.querySelector("meta[name=csrf-token]");
    if (meta) return meta.content;
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  /* ---------------------------------------------------------- Video position */

  var tracked = typeof WeakSet === "function" ? new WeakSet() : null;

  function track(video) {
    var url = video.getAttribute("data-lesson-progress") || video.getAttribute("data-progress-url");
    if (!url || (tracked && tracked.has(video))) return;
    if (tracked) tracked.add(video);

    var lastSent = -1;
    var lastSentAt = 0;

    function restore() {
      var position = parseFloat(video.getAttribute("data-position") || "0");
      if (!(position > RESUME_MARGIN_S)) return;
      if (isFinite(video.duration) && position > video.duration - RESUME_MARGIN_S) return;
      if (video.currentTime < 1) {
        try {
          video.currentTime = position;
        } catch (error) {
          /* not seekable yet; the learner starts at the beginning */
        }
      }
    }

    function send(leaving) {
      var position = Math.floor(video.currentTime || 0);
      if (position === lastSent) return;
      lastSent = position;
      lastSentAt = Date.now();
      var token = csrfToken();
      var body = new FormData();
      body.append("position", String(position));
      body.append("csrfmiddlewaretoken", token);
      // A page being left cannot wait for an answer; a beacon survives the unload.
      if (leaving && navigator.sendBeacon && navigator.sendBeacon(url, body)) return;
      fetch(url, {
        method: "POST",
        body: body,
        credentials: "same-origin",
        keepalive: true,
        headers: { Accept: "application/json", "X-CSRFToken": token },
      })
        .then(function (response) {
          if (!response.ok) lastSent = -1;
        })
        .catch(function () {
          lastSent = -1; // try again at the next save
        });
    }

    if (video.readyState >= 1) restore();
    else video.addEventListener("loadedmetadata", restore, { once: true });

    video.addEventListener("play", function () {
      lastSentAt = Date.now();
    });
    video.addEventListener("timeupdate", function () {
      if (!video.paused && Date.now() - lastSentAt >= SAVE_EVERY_MS) send(false);
    });
    video.addEventListener("pause", function () {
      send(false);
    });
    video.addEventListener("ended", function () {
      send(false);
    });
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "hidden" && video.currentTime > 0) send(true);
    });
    window.addEventListener("pagehide", function () {
      if (video.currentTime > 0) send(true);
    });
  }

  function trackAll(root) {
    if (root.matches && root.matches("video[data-lesson-progress], video[data-progress-url]")) {
      track(root);
    }
    if (root.querySelectorAll) {
      root.querySelectorAll("video[data-lesson-progress], video[data-progress-url]").forEach(track);
    }
  }

  /* ----------------------------------------------------------- Mark complete */

  function updateProgress(course) {
    if (!course) return;
    document.querySelectorAll("[data-course-progress]").forEach(function (box) {
      var bar = box.querySelector("[data-progress-bar]");
      if (bar) {
        bar.value = course.percent;
        bar.textContent = course.percent + "%";
      }
      var percent = box.querySelector("[data-progress-percent]");
      if (percent) percent.textContent = course.percent + "%";
      var done = box.querySelector("[data-progress-done]");
      if (done) done.textContent = String(course.completed);
    });
  }

  function updateOutline(lessonId, completed, labels) {
    document.querySelectorAll('[data-outline-lesson="' + lessonId + '"]').forEach(function (item) {
      item.classList.toggle("is-complete", completed);
      var status = item.querySelector(".outline-lesson__status");
      if (!status) return;
      var icon = status.querySelector("svg");
      var template = document.querySelector(
        completed ? "template[data-icon-check]" : "template[data-icon-play]"
      );
      if (icon && template) icon.replaceWith(template.content.firstElementChild.cloneNode(true));
      var state = status.querySelector("[data-lesson-state]");
      if (state) state.textContent = completed ? labels.completed : labels.notCompleted;
    });
  }

  function enhanceCompleteForm(form) {
    var button = form.querySelector("[data-complete-button]");
    var value = form.querySelector("[data-complete-value]");
    var status = form.querySelector("[data-complete-status]");
    var lessonId = (form.getAttribute("action").match(/\/(\d+)\/?$/) || [])[1];
    var checkTemplate = document.querySelector("template[data-icon-check]");

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (button.getAttribute("aria-busy") === "true") return;
      button.setAttribute("aria-busy", "true");
      fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRFToken": csrfToken(form) },
      })
        .then(function (response) {
          return response.json().then(function (data) {
            if (!response.ok || !data.ok) throw new Error(data.error || "failed");
            return data;
          });
        })
        .then(function (data) {
          var completed = Boolean(data.completed);
          form.classList.toggle("is-complete", completed);
          value.value = completed ? "0" : "1";
          button.textContent = completed ? form.dataset.labelUndo : form.dataset.labelComplete;
          button.classList.toggle("button--secondary", completed);
          button.classList.toggle("button--large", !completed);
          status.classList.remove("is-error");
          status.textContent = completed ? form.dataset.textComplete : form.dataset.textUndone;
          if (completed && checkTemplate) {
            status.prepend(checkTemplate.content.firstElementChild.cloneNode(true));
          }
          updateProgress(data.course);
          if (lessonId) {
            updateOutline(lessonId, completed, {
              completed: form.dataset.stateCompleted || "",
              notCompleted: form.dataset.stateNotCompleted || "",
            });
          }
        })
        .catch(function (error) {
          status.classList.add("is-error");
          // The server's reason when it gave one (signed out, not bought), else a retry hint.
          status.textContent =
            error && error.message && error.message !== "failed" && !/fetch|network/i.test(error.message)
              ? error.message
              : form.dataset.textFailed;
        })
        .finally(function () {
          button.removeAttribute("aria-busy");
        });
    });
  }

  /* -------------------------------------------------------------- Local time */

  function localTimes() {
    var lang = document.documentElement.lang || undefined;
    var format;
    try {
      format = new Intl.DateTimeFormat(lang, {
        weekday: "long",
        year: "numeric",
        month: "long",
        day: "numeric",
        hour: "2-digit",
        minute: "2-digit",
        timeZoneName: "short",
      });
    } catch (error) {
      return;
    }
    document.querySelectorAll("time[data-local-time]").forEach(function (element) {
      var moment = new Date(element.getAttribute("datetime"));
      if (isNaN(moment.getTime())) return;
      element.title = element.textContent.trim();
      element.textContent = format.format(moment);
    });
  }

  function start() {
    localTimes();
    document.querySelectorAll("form[data-lesson-complete]").forEach(enhanceCompleteForm);
    trackAll(document);
    // The player may build its <video> after this script ran.
    if (typeof MutationObserver === "function") {
      new MutationObserver(function (records) {
        records.forEach(function (record) {
          record.addedNodes.forEach(function (node) {
            if (node.nodeType === 1) trackAll(node);
          });
        });
      }).observe(document.body, { childList: true, subtree: true });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
