// One transcription as a row of the page: its upload, its live progress, then its transcript or failure.
(function (global) {
  "use strict";

  // Words for the stages this app knows; any other declared stage is shown by its name.
  var LABELS = {
    uploading: "Uploading", queued: "Queued", transcribing: "Transcribing", aligning: "Aligning",
    diarizing: "Finding speakers", complete: "Done"
  };
  // How much of the row's bar each known stage takes: stage percentages restart at 0, the bar only
  // moves forward through the stages. Undeclared weights share what is left evenly.
  var WEIGHT = { uploading: 10, queued: 2, transcribing: 68, aligning: 10, diarizing: 10 };
  // The declared stages in order (PROGRESS["STAGES"], from the page's options; every snapshot repeats
  // them), and where each sits on the bar.
  var STEPS = [], SPAN = {};

  function declare(stages) {
    if (!stages || !stages.length) return;
    STEPS = stages.filter(function (s) { return s !== "complete"; });
    var known = 0, unknown = 0;
    STEPS.forEach(function (s) { if (WEIGHT[s] != null) known += WEIGHT[s]; else unknown += 1; });
    var share = unknown ? Math.max(0, 100 - known) / unknown : 0, scale = 100 / (known + share * unknown || 1);
    var at = 0;
    SPAN = { complete: [100, 100] };
    STEPS.forEach(function (s) {
      var width = (WEIGHT[s] != null ? WEIGHT[s] : share) * scale;
      SPAN[s] = [at, at + width];
      at += width;
    });
  }

  function label(stage) {
    return LABELS[stage] || stage.charAt(0).toUpperCase() + stage.slice(1).replace(/_/g, " ");
  }

  function clock(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    var h = Math.floor(seconds / 3600), m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    var mm = (h && m < 10 ? "0" : "") + m, ss = (s < 10 ? "0" : "") + s;
    return (h ? h + ":" : "") + mm + ":" + ss;
  }

  function size(bytes) {
    if (bytes == null) return "";
    if (bytes < 1024 * 1024) return Math.max(1, Math.round(bytes / 1024)) + " KB";
    return (bytes / 1024 / 1024).toFixed(1) + " MB";
  }

  function Row(page, list, opts) {
    this.page = page;
    this.options = page.options;
    if (!STEPS.length) declare(page.options.stages);
    this.el = document.getElementById("row-template").content.firstElementChild.cloneNode(true);
    this.q = function (sel) { return this.el.querySelector(sel); };
    this.name = opts.name || "";
    this.attempt = 1;
    this.best = 0;
    this.stage = null;
    this.rateFrom = null;
    this.connection = null;
    this.client = null;
    this.refused = false;
    this.describe(opts.name, opts.size, opts.duration);
    if (opts.prepend) list.insertBefore(this.el, list.firstChild); else list.appendChild(this.el);
    var self = this;
    this.q(".details-toggle").addEventListener("click", function () { self.toggle(this, self.q(".details"), "Details", "Hide details"); });
    this.q(".transcript-toggle").addEventListener("click", function () { self.toggleTranscript(); });
    this.q(".retry").addEventListener("click", function () { self.retry(); });
    this.q(".cancel").addEventListener("click", function () { self.cancel(); });
    this.q(".delete").addEventListener("click", function () { self.remove(); });
    this.q(".copy").addEventListener("click", function () { self.copy(); });
  }

  Row.prototype.describe = function (name, bytes, duration) {
    if (name) { this.name = name; this.q(".row-name").textContent = name; }
    var meta = [size(bytes), duration ? clock(duration) : ""].filter(Boolean);
    if (meta.length) this.q(".row-meta").textContent = meta.join(" · ");
  };

  Row.prototype.badge = function (text, status) {
    this.q(".badge").textContent = text;
    if (status) this.el.dataset.status = status;
  };

  Row.prototype.announce = function (text) {
    this.page.announce((this.name || "Transcription") + ": " + text);
  };

  // Watch the task live; `owned`: this session may retry it.
  Row.prototype.watch = function (task) {
    var self = this;
    this.taskId = task.task_id;
    this.token = task.token || task.watch_token;
    this.owned = task.owned !== false;
    this.el.dataset.taskId = task.task_id;
    this.attempt = task.attempt || 1;
    this.q(".row-name").href = task.share_url;
    this.q(".share-link").value = new URL(task.share_url, global.location.href).href;
    this.q(".share-box").hidden = false;
    this.q(".delete").hidden = !this.owned;
    if (task.status === "complete") { this.done(task.expanded === true); return; }
    if (task.stage) this.show(task.stage, task.percentage || 0, null, task.attempt || 1);
    this.client = new TaskProgress(task.task_id, {
      snapshot: function (s) {
        declare(s.stages);
        self.walk(s.history || [], s.attempt, s.stage);
        if (s.status === "failed" && s.error) self.fail(s.error, s.attempt);
        else if (s.status === "cancelled") self.cancelled(s.attempt);
        else self.show(s.stage, s.percentage, s.message, s.attempt);
        if (s.queue_position != null) self.place(s.queue_position, s.starts_in_seconds);
      },
      progress: function (p) { self.show(p.stage, p.percentage, p.message, p.attempt); },
      error: function (e) { self.fail(e, e.attempt); },
      cancelled: function (c) { self.cancelled(c.attempt); },
      queue: function (q) { self.place(q.queue_position, q.starts_in_seconds); },
      status: function (state, info) { self.connection = { state: state, attempt: info.attempt || 0 }; self.page.connectionChanged(); },
      unknown: function () { self.refuse("This transcription is not available (it may have been deleted)."); }
    }, { token: this.token, heartbeatInterval: this.options.heartbeatInterval }).start();
  };

  // A snapshot says where the task is now; the stages it passed meanwhile are shown (and announced)
  // in order first, so the row never skips one.
  Row.prototype.walk = function (history, attempt, now) {
    var self = this;
    if (attempt < this.attempt) return;
    var from = attempt > this.attempt ? -1 : STEPS.indexOf(this.stage);
    history.forEach(function (h) {
      var at = STEPS.indexOf(h.stage);
      if (h.attempt === attempt && at > from && h.stage !== now) { self.show(h.stage, 100, null, attempt); from = at; }
    });
  };

  Row.prototype.newAttempt = function (attempt) {
    if (attempt <= this.attempt) return false;
    this.attempt = attempt;
    this.best = 0;
    this.rateFrom = null;
    this.q(".problem").hidden = true;
    this.announce("retrying (attempt " + attempt + ")");
    return true;
  };

  Row.prototype.show = function (stage, percentage, message, attempt) {
    if (this.refused || (attempt && attempt < this.attempt)) return;
    if (attempt) this.newAttempt(attempt);
    if (stage === "complete") { this.done(true); return; }
    var span = SPAN[stage] || [0, 100];
    this.bar(span[0] + (span[1] - span[0]) * percentage / 100);
    var step = STEPS.indexOf(stage) + 1;
    this.badge(label(stage) + " · step " + step + " of " + STEPS.length, "running");
    this.q(".row-percent").textContent = percentage + "%";
    this.q(".row-message").textContent = message || "";
    this.el.dataset.stage = stage;
    if (stage !== this.stage) { this.stage = stage; this.announce(label(stage) + ", step " + step + " of " + STEPS.length); }
    this.q(".cancel").hidden = !this.owned;
    this.live = true;  // seen running here: its end is news (the title, a notification)
    if (stage !== "queued") delete this.el.dataset.place;
    this.estimate();
  };

  function ordinal(n) {
    var tens = n % 100, ones = n % 10;
    var suffix = tens >= 11 && tens <= 13 ? "th" : ones === 1 ? "st" : ones === 2 ? "nd" : ones === 3 ? "rd" : "th";
    return n + suffix;
  }

  // While it waits: its place in line (0: next) and when it should start.
  Row.prototype.place = function (position, startsIn) {
    if (this.stage !== "queued" || this.el.dataset.status !== "running") return;
    var text = position === 0 ? "Next in line" : ordinal(position + 1) + " in line";
    if (startsIn != null) {
      text += startsIn < 60 ? " · starts in under a minute" : " · starts in about " + Math.round(startsIn / 60) + " min";
    }
    this.el.dataset.place = String(position);
    this.q(".row-eta").textContent = text;
  };

  // The bar never goes back within an attempt; a CSS transition moves it between updates.
  Row.prototype.bar = function (value) {
    value = Math.round(Math.max(this.best, Math.min(100, value)) * 10) / 10;
    this.best = value;
    this.q(".bar.task .bar-fill").style.transform = "scaleX(" + value / 100 + ")";
    this.q(".bar.task").setAttribute("aria-valuenow", String(Math.round(value)));
    this.el.dataset.attempt = String(this.attempt);
    this.el.dataset.bar = String(value);
  };

  // Time left, from the bar's pace since the job started working (not while it waits in the queue).
  Row.prototype.estimate = function () {
    var now = Date.now(), eta = this.q(".row-eta");
    if (STEPS.indexOf(this.stage) <= STEPS.indexOf("queued")) { eta.textContent = ""; return; }
    if (!this.rateFrom) { this.rateFrom = { t: now, v: this.best }; return; }
    var dt = (now - this.rateFrom.t) / 1000, dv = this.best - this.rateFrom.v;
    if (dt < 3 || dv <= 0) return;
    var left = (100 - this.best) * dt / dv;
    eta.textContent = left < 60 ? "about " + Math.max(5, Math.round(left / 5) * 5) + " s left"
      : "about " + Math.round(left / 60) + " min left";
  };

  // The upload's bytes, speed and time left (the speed over the last few seconds of sending).
  Row.prototype.uploadProgress = function (sent, total) {
    var box = this.q(".bar.upload"), now = Date.now();
    box.hidden = sent >= total;
    box.querySelector(".bar-fill").style.transform = "scaleX(" + (total ? sent / total : 0) + ")";
    var seen = this.sentAt = (this.sentAt || []).filter(function (s) { return now - s.t < 5000 && s.sent <= sent; });
    seen.push({ t: now, sent: sent });
    var first = seen[0], rate = now - first.t > 500 ? (sent - first.sent) * 1000 / (now - first.t) : 0;
    if (this.stage === null || this.stage === "uploading") {
      this.badge(label("uploading") + " · step " + (STEPS.indexOf("uploading") + 1) + " of " + STEPS.length, "running");
      this.q(".row-percent").textContent = Math.floor(100 * sent / total) + "%";
      var text = size(sent) + " of " + size(total) + " sent";
      if (rate > 0 && sent < total) text += " · " + size(rate) + "/s · " + clock((total - sent) / rate) + " left";
      if (this.el.dataset.upload !== "paused") this.q(".row-message").textContent = text;
      this.bar((SPAN.uploading || [0, 0])[1] * sent / total);
    }
  };

  // The connection dropped: the upload waits and goes on by itself from the server's offset.
  Row.prototype.uploadPaused = function () {
    this.el.dataset.upload = "paused";
    this.sentAt = [];
    this.q(".row-message").textContent = "Paused, resuming…";
    this.announce("upload paused, resuming when the connection returns");
  };

  Row.prototype.uploadResumed = function () {
    if (this.el.dataset.upload === "paused") this.announce("upload resumed");
    this.el.dataset.upload = "sending";
  };

  Row.prototype.fail = function (error, attempt) {
    if (this.refused || (attempt && attempt < this.attempt)) return;
    if (attempt) this.newAttempt(attempt);
    this.badge("Failed", "failed");
    this.q(".row-eta").textContent = this.q(".row-percent").textContent = "";
    this.q(".row-message").textContent = attempt > 1 ? "Attempt " + attempt + " failed." : "";
    this.q(".problem").hidden = false;
    this.q(".problem-text").textContent = error.user_message;
    this.q(".details").textContent = error.technical_detail || "No further detail (" + error.error_code + ").";
    this.q(".details-toggle").hidden = false;
    var final = (this.options.finalErrors || []).indexOf(error.error_code) >= 0;
    this.q(".retry").hidden = !this.owned || final;
    this.q(".retry").disabled = false;
    this.q(".cancel").hidden = true;
    this.announce("failed: " + error.user_message);
    this.ended("failed");
  };

  Row.prototype.cancelled = function (attempt) {
    if (this.refused || (attempt && attempt < this.attempt)) return;
    if (attempt) this.newAttempt(attempt);
    this.badge("Cancelled", "cancelled");
    delete this.el.dataset.place;
    this.q(".row-eta").textContent = this.q(".row-percent").textContent = "";
    this.q(".row-message").textContent = "";
    this.q(".problem").hidden = false;
    this.q(".problem-text").textContent = "Cancelled. Retry to run it again.";
    this.q(".details-toggle").hidden = true;
    this.q(".retry").hidden = !this.owned;
    this.q(".retry").disabled = false;
    this.q(".cancel").hidden = true;
    this.announce("cancelled");
    this.live = false;  // a cancel is the owner's own doing: no notice
  };

  // A job seen running here has ended: the page tells the person if the tab is hidden.
  Row.prototype.ended = function (how) {
    if (this.live) this.page.jobEnded(this, how);
    this.live = false;
  };

  Row.prototype.cancel = function () {
    if (!global.confirm("Cancel the transcription of “" + (this.name || "this file") + "”?")) return;
    var self = this, button = this.q(".cancel");
    button.disabled = true;
    this.page.request("POST", "/api/tasks/" + encodeURIComponent(this.taskId) + "/cancel").then(function (res) {
      button.disabled = false;
      if (res.status === 200) self.cancelled(res.body.attempt);
      else self.q(".row-message").textContent = res.body.detail || "It could not be cancelled.";
    });
  };

  // Delete the transcription and everything of it; the row goes.
  Row.prototype.remove = function () {
    if (!global.confirm("Delete “" + (this.name || "this transcription") + "” and its transcript? This cannot be undone.")) return;
    var self = this, button = this.q(".delete");
    button.disabled = true;
    this.page.request("DELETE", "/api/tasks/" + encodeURIComponent(this.taskId) + "/").then(function (res) {
      if (res.status !== 204) {
        button.disabled = false;
        self.q(".row-message").textContent = res.body.detail || "It could not be deleted.";
        return;
      }
      self.refused = true;
      if (self.client) self.client.stop();
      self.client = self.connection = null;
      self.page.removeRow(self);
      self.page.announce((self.name || "Transcription") + ": deleted");
    });
  };

  // The upload was refused (or the task is gone): final, and the socket has nothing more to say.
  Row.prototype.refuse = function (text) {
    this.refused = true;
    if (this.client) this.client.stop();
    this.client = null;
    this.connection = null;
    this.page.connectionChanged();
    this.badge("Refused", "refused");
    this.q(".bar.upload").hidden = true;
    this.q(".row-percent").textContent = this.q(".row-eta").textContent = this.q(".row-message").textContent = "";
    this.q(".problem").hidden = false;
    this.q(".problem-text").textContent = text.charAt(0).toUpperCase() + text.slice(1);
    this.q(".details-toggle").hidden = this.q(".retry").hidden = this.q(".share-box").hidden = true;
    this.q(".row-name").removeAttribute("href");
    this.announce("refused: " + text);
  };

  Row.prototype.retry = function () {
    var self = this, button = this.q(".retry");
    button.disabled = true;
    this.q(".row-message").textContent = "Starting a new attempt…";
    this.page.request("POST", "/api/tasks/" + encodeURIComponent(this.taskId) + "/retry").then(function (res) {
      if (res.status !== 202) throw new Error(res.body.detail || res.body.error || "The retry was refused.");
      self.client.reconnectNow(); // an open socket follows the retry; one in backoff tries now
    }).catch(function (e) {
      button.disabled = false;
      self.q(".row-message").textContent = e.message;
    });
  };

  Row.prototype.done = function (expanded) {
    if (this.el.dataset.status === "complete") return;
    this.badge("Done", "complete");
    this.bar(100);
    this.el.dataset.stage = "complete";
    this.q(".row-percent").textContent = "100%";
    this.q(".row-eta").textContent = this.q(".row-message").textContent = "";
    this.q(".problem").hidden = true;
    this.q(".cancel").hidden = true;
    this.ended("done");
    var base = "/api/tasks/" + encodeURIComponent(this.taskId) + "/result";
    var query = "?token=" + encodeURIComponent(this.token);
    Array.prototype.forEach.call(this.el.querySelectorAll(".download"), function (a) {
      a.href = base + "." + a.dataset.format + query;
    });
    this.q(".result").hidden = false;
    this.resultUrl = base + query;
    if (this.stage !== "complete") this.announce("done");
    this.stage = "complete";
    if (expanded && this.q(".transcript").hidden) this.toggleTranscript();
  };

  Row.prototype.toggleTranscript = function () {
    var open = this.toggle(this.q(".transcript-toggle"), this.q(".transcript"), "Show transcript", "Hide transcript");
    if (open && !this.loaded) this.loadTranscript();
  };

  Row.prototype.loadTranscript = function () {
    var self = this, list = this.q(".transcript");
    this.loaded = true;
    fetch(this.resultUrl, { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) throw new Error("status " + r.status);
      return r.json();
    }).then(function (result) {
      list.textContent = "";
      var segments = result.segments || [];
      // One voice throughout: a label on every line says nothing.
      var voices = segments.map(function (seg) { return seg.speaker; }).filter(function (v, i, all) { return v && all.indexOf(v) === i; });
      segments.forEach(function (seg) {
        var li = document.createElement("li"), time = document.createElement("time"), p = document.createElement("span");
        time.textContent = clock(seg.start);
        time.dateTime = "PT" + Number(seg.start).toFixed(2) + "S";
        if (seg.speaker && voices.length > 1) {
          var who = document.createElement("span");
          who.className = "speaker";
          who.textContent = seg.speaker;
          p.appendChild(who);
        }
        p.appendChild(document.createTextNode(seg.text));
        li.appendChild(time);
        li.appendChild(p);
        list.appendChild(li);
      });
      if (!list.children.length) list.textContent = result.text || "(no speech recognised)";
      self.el.dataset.transcript = "loaded";
    }).catch(function () {
      self.loaded = false;
      list.textContent = "The transcript could not be loaded; try again.";
    });
  };

  // Show or hide `box`, labelling its button to match; whether it is shown now.
  Row.prototype.toggle = function (button, box, closed, open) {
    box.hidden = !box.hidden;
    button.textContent = box.hidden ? closed : open;
    button.setAttribute("aria-expanded", String(!box.hidden));
    return !box.hidden;
  };

  Row.prototype.copy = function () {
    var input = this.q(".share-link"), button = this.q(".copy");
    input.select();
    var copied = navigator.clipboard ? navigator.clipboard.writeText(input.value) : Promise.reject();
    copied.catch(function () { document.execCommand("copy"); }).then(function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy link"; }, 2000);
    });
  };

  global.TranscriptionRow = Row;
  global.TranscriptionRow.size = size;
})(window);
