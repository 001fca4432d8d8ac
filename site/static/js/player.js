/* Lodestone video player: HLS from per-viewer playlists (media/includes/player.html).
 *
 * Engine: Safari (and every iOS browser, all WebKit) plays HLS itself, which is lighter
 * and keeps AirPlay and the system player. Elsewhere hls.js on Media Source Extensions,
 * loaded only when needed. Chrome now also answers canPlayType(HLS) with "maybe"; it
 * stays on hls.js, whose errors and quality switching we can see and handle.
 *
 * Signed URLs expire. A playlist's segment URLs expire TTL seconds after a viewer at
 * normal speed would need them; after a long pause or a seek back a URL may have
 * expired, so before hls.js loads a segment whose URL is about to expire, the playlists
 * are fetched again (master, then that rendition) and the fresh URL is used. The native
 * player cannot be steered like that: after a failure it is reloaded at the same time.
 */
(function () {
  "use strict";
  if (window.LodestonePlayer) {
    window.LodestonePlayer.scan();
    return;
  }

  var HLS_TYPE = "application/vnd.apple.mpegurl";
  var EXPIRY_MARGIN_MS = 15000;
  var STATUS_POLL_MS = 4000;
  var MAX_RELOADS = 3;
  var hlsScript = null;
  // Server time minus ours (ms), from the page: expiries are the server's clock.
  var clockSkew = 0;

  function serverNow() {
    return Date.now() + clockSkew;
  }

  function loadHlsJs(src) {
    if (window.Hls) return Promise.resolve(window.Hls);
    if (!hlsScript) {
      hlsScript = new Promise(function (resolve, reject) {
        var script = document.createElement("script");
        script.src = src;
        script.async = true;
        script.onload = function () { resolve(window.Hls); };
        script.onerror = function () { reject(new Error("hls.js did not load")); };
        document.head.appendChild(script);
      });
    }
    return hlsScript;
  }

  function isApple() {
    return (navigator.vendor || "").indexOf("Apple") === 0;
  }

  function chooseEngine(root, video) {
    var forced = root.getAttribute("data-hls-engine");
    if (forced === "native" || forced === "hls.js") return forced;
    var native = video.canPlayType(HLS_TYPE) !== "";
    var mse = "MediaSource" in window || "ManagedMediaSource" in window;
    if (native && (isApple() || !mse)) return "native";
    if (mse) return "hls.js";
    return native ? "native" : null;
  }

  // --- Signed URL lifetimes -------------------------------------------------------------

  function expiresAt(url) {
    // Our own segment URL: /protected/video/seg/<name>.<expiry, hex>.<mac>/
    var local = /\/video\/seg\/[^./]+\.([0-9a-f]+)\.[^./]+\/?$/.exec(url.split("?")[0]);
    if (local) return parseInt(local[1], 16) * 1000;
    // An S3 presigned URL: X-Amz-Date (YYYYMMDDTHHMMSSZ) plus X-Amz-Expires seconds.
    var date = /[?&]X-Amz-Date=(\d{8}T\d{6}Z)/.exec(url);
    var life = /[?&]X-Amz-Expires=(\d+)/.exec(url);
    if (date && life) {
      var d = date[1];
      var signed = Date.UTC(+d.slice(0, 4), +d.slice(4, 6) - 1, +d.slice(6, 8),
        +d.slice(9, 11), +d.slice(11, 13), +d.slice(13, 15));
      return signed + parseInt(life[1], 10) * 1000;
    }
    return Infinity;
  }

  function urlKey(url) {
    var parsed = new URL(url, location.href);
    var local = /\/video\/seg\/([^./]+)\./.exec(parsed.pathname);
    return local ? "seg:" + local[1] : parsed.origin + parsed.pathname;
  }

  function fetchText(url) {
    return fetch(url, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status + " for a playlist");
      return r.text();
    });
  }

  function playlistUris(text, base) {
    var uris = [];
    text.split("\n").forEach(function (raw) {
      var line = raw.trim();
      var map = /^#EXT-X-MAP:.*URI="([^"]+)"/.exec(line);
      if (map) uris.push(new URL(map[1], base).href);
      else if (line && line[0] !== "#") uris.push(new URL(line, base).href);
    });
    return uris;
  }

  function Refresher(masterUrl, root) {
    this.masterUrl = masterUrl;
    this.root = root;
    this.count = 0;
    this.fresh = new Map();
    this.loading = new Map();
  }

  Refresher.prototype.reload = function (levelUrl) {
    var self = this;
    var path = new URL(levelUrl, location.href).pathname;
    if (self.loading.has(path)) return self.loading.get(path);
    var master = new URL(self.masterUrl, location.href).href;
    var done = fetchText(master).then(function (text) {
      var rendition = playlistUris(text, master).filter(function (u) {
        return new URL(u).pathname === path;
      })[0];
      if (!rendition) throw new Error("rendition gone from the master playlist");
      return fetchText(rendition).then(function (body) {
        playlistUris(body, rendition).forEach(function (u) { self.fresh.set(urlKey(u), u); });
        self.count += 1;
        self.root.setAttribute("data-url-refreshes", String(self.count));
      });
    });
    self.loading.set(path, done);
    return done.finally(function () { self.loading.delete(path); });
  };

  // hls.js calls this before each request; it may open the XHR with another URL.
  Refresher.prototype.xhrSetup = function (xhr, url, context) {
    var self = this;
    if (!context || !context.frag || expiresAt(url) - serverNow() > EXPIRY_MARGIN_MS) return;
    var key = urlKey(url);
    var known = self.fresh.get(key);
    if (known && expiresAt(known) - serverNow() > EXPIRY_MARGIN_MS) {
      xhr.open("GET", known, true);
      return;
    }
    return self.reload(context.frag.baseurl || url).then(function () {
      var fresh = self.fresh.get(key);
      if (fresh) xhr.open("GET", fresh, true);
    }).catch(function () {
      // Leave the old URL: its 403 goes through hls.js's error handling below.
    });
  };

  // --- One player -------------------------------------------------------------------------

  function Player(root) {
    this.root = root;
    this.video = root.querySelector("video[data-video-src]");
    this.message = root.querySelector("[data-video-message]");
    this.src = this.video.getAttribute("data-video-src");
    this.reloads = [];
    this.mediaRecoveries = 0;
    this.hls = null;
    this.fragments = 0;
  }

  Player.prototype.say = function (key, detail) {
    this.message.textContent = this.root.getAttribute("data-msg-" + key) + (detail ? " (" + detail + ")" : "");
    this.message.hidden = false;
    this.root.setAttribute("data-player-state", "error");
  };

  Player.prototype.start = function (at) {
    var self = this;
    var engine = chooseEngine(self.root, self.video);
    self.root.setAttribute("data-engine", engine || "none");
    if (!engine) return self.say("unsupported");
    if (engine === "native") return self.startNative(at);
    loadHlsJs(self.root.getAttribute("data-hls-script")).then(function (Hls) {
      if (!Hls || !Hls.isSupported()) {
        if (self.video.canPlayType(HLS_TYPE)) return self.startNative(at);
        return self.say("unsupported");
      }
      self.startHlsJs(Hls, at);
    }, function () { self.say("error", "hls.js"); });
  };

  Player.prototype.startHlsJs = function (Hls, at) {
    var self = this;
    var refresher = new Refresher(self.src, self.root);
    var hls = new Hls({
      startPosition: at || -1,
      xhrSetup: function (xhr, url, context) { return refresher.xhrSetup(xhr, url, context); },
    });
    self.hls = hls;
    self.root.lodestoneHls = hls;
    hls.on(Hls.Events.FRAG_LOADED, function () {
      self.fragments += 1;
      self.root.setAttribute("data-fragments-loaded", String(self.fragments));
    });
    hls.on(Hls.Events.ERROR, function (event, data) {
      if (!data.fatal) return;
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR && self.mediaRecoveries < 2) {
        self.mediaRecoveries += 1;
        hls.recoverMediaError();
        return;
      }
      self.recover(data.details);
    });
    hls.loadSource(self.src);
    hls.attachMedia(self.video);
  };

  Player.prototype.startNative = function (at) {
    var self = this;
    var video = self.video;
    video.src = self.src;
    if (at) {
      video.addEventListener("loadedmetadata", function () { video.currentTime = at; }, { once: true });
    }
    if (!self.nativeErrors) {
      self.nativeErrors = true;
      video.addEventListener("error", function () {
        self.recover(video.error ? "media error " + video.error.code : "media error");
      });
    }
  };

  // A fatal error: a 403 from the status URL means access ended; otherwise reload the
  // playlists (fresh signatures) at the same time, a few times, before giving up.
  Player.prototype.recover = function (detail) {
    var self = this;
    var now = Date.now();
    var at = self.video.currentTime || 0;
    var wasPlaying = !self.video.paused;
    self.reloads = self.reloads.filter(function (t) { return now - t < 60000; });
    fetch(self.root.getAttribute("data-status-url"), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.status; }, function () { return 0; })
      .then(function (status) {
        if (status === 403) return self.say("denied");
        if (self.reloads.length >= MAX_RELOADS) return self.say("error", detail);
        self.reloads.push(now);
        if (self.hls) { self.hls.destroy(); self.hls = null; }
        self.start(at);
        if (wasPlaying) {
          var playing = self.video.play();
          if (playing && playing.catch) playing.catch(function () {});
        }
      });
  };

  // --- Not ready yet: show status and progress until it is --------------------------------

  function watchStatus(root, player) {
    var label = root.querySelector("[data-video-status-label]");
    var progressLabel = root.querySelector("[data-video-progress-label]");
    var bar = root.querySelector("[data-video-progress]");
    function poll() {
      fetch(root.getAttribute("data-status-url"), { credentials: "same-origin", cache: "no-store" })
        .then(function (r) {
          if (r.status === 403) { player.say("denied"); return null; }
          return r.ok ? r.json() : {};
        })
        .then(function (data) {
          if (!data) return;
          if (data.status_label && label) label.textContent = data.status_label;
          if (typeof data.progress === "number") {
            if (bar) bar.value = data.progress;
            if (progressLabel) progressLabel.textContent = data.progress + "%";
          }
          root.setAttribute("data-status", data.status || root.getAttribute("data-status"));
          if (data.ready) {
            var pending = root.querySelector("[data-video-pending]");
            if (pending) pending.hidden = true;
            player.video.hidden = false;
            player.video.poster = player.video.getAttribute("data-poster-src");
            player.start();
          } else if (data.status === "failed") {
            if (bar) bar.hidden = true;
            player.say("failed", data.error);
          } else {
            window.setTimeout(poll, STATUS_POLL_MS);
          }
        }, function () { window.setTimeout(poll, STATUS_POLL_MS * 2); });
    }
    window.setTimeout(poll, STATUS_POLL_MS);
  }

  // --- Forensic watermark: the viewer's email, moving over the picture -----------------
  // A deterrent on screen (the A/B segments are the evidence). Every OVERLAY_MOVE_MS it
  // jumps somewhere else, so no fixed crop or blur box hides it; full screen is taken by
  // the figure rather than the bare <video>, so the overlay stays on the picture (iPhone
  // Safari can only show the bare video full screen: there the overlay is off screen).

  var OVERLAY_MOVE_MS = 5000;

  function moveOverlay(root, overlay) {
    var maxLeft = Math.max(0, root.clientWidth - overlay.offsetWidth);
    var maxTop = Math.max(0, root.clientHeight - overlay.offsetHeight);
    overlay.style.left = Math.round(maxLeft * (0.04 + Math.random() * 0.92)) + "px";
    overlay.style.top = Math.round(maxTop * (0.04 + Math.random() * 0.92)) + "px";
    root.setAttribute("data-overlay-moves", String(parseInt(root.getAttribute("data-overlay-moves") || "0", 10) + 1));
  }

  function setUpOverlay(root, video) {
    var overlay = root.querySelector("[data-video-viewer]");
    if (!overlay) return;
    moveOverlay(root, overlay);
    window.setInterval(function () { moveOverlay(root, overlay); }, OVERLAY_MOVE_MS);
    document.addEventListener("fullscreenchange", function () {
      if (document.fullscreenElement !== video || !root.requestFullscreen) return;
      document.exitFullscreen().then(function () {
        return root.requestFullscreen();
      }).catch(function () {});
    });
  }

  function setUp(root) {
    if (root.lodestonePlayer) return;
    var serverTime = parseInt(root.getAttribute("data-server-time"), 10);
    if (serverTime) clockSkew = serverTime * 1000 - Date.now();
    var player = new Player(root);
    root.lodestonePlayer = player;
    setUpOverlay(root, player.video);
    if (root.getAttribute("data-status") === "ready") player.start();
    else if (root.getAttribute("data-status") !== "failed") watchStatus(root, player);
  }

  window.LodestonePlayer = {
    scan: function () {
      Array.prototype.forEach.call(document.querySelectorAll("[data-video-player]"), setUp);
    },
  };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", window.LodestonePlayer.scan);
  } else {
    window.LodestonePlayer.scan();
  }
})();
