// TaskProgress: a reusable, framework-free browser client for /ws/tasks/<id>/.
//
// Keeps the last seq it saw and resumes with ?last_seq after a drop, ignores repeats, treats a silent
// socket as dead, backs off with jitter, reconnects at once (jittered) when the server restarts
// (1012, or 4012 under daphne), and polls the HTTP snapshot while the socket stays down. A failed task
// is watched on: a retry (a higher `attempt`) arrives as progress. Only completion ends the watch.
//
//   var watch = new TaskProgress(taskId, handlers, options).start();
//
// options (all optional):
//   token              a watch token (share links carry one); the owner's session cookie needs none
//   base               server origin, "https://example.org" or "wss://example.org" (default: this page's)
//   heartbeatInterval  seconds between the server's heartbeats (default 30); silence for 2.5 of them
//                      counts as a dead connection
//   maxBackoff         longest wait between reconnects, seconds (default 15)
//   pollInterval       seconds between HTTP polls while the socket is down (default 3)
//   pollAfter          failed reconnects before polling the HTTP snapshot meanwhile (default 3)
//   warnAfter          failed reconnects before the "offline" status (default 5): a restart or a
//                      blip reconnects well before, so it never looks alarming
//   WebSocket, fetch, random   stand-ins for the browser's, for tests
// handlers (each called with (value, client); status with (state, info, client)):
//   snapshot(snapshot)  the task's whole state: first on every fresh connect, and from polls
//   progress(message)   a progress frame; message.attempt rises when the task is retried
//   error(message)      the attempt failed (the watch goes on: a retry may follow)
//   cancelled(message)  the task was cancelled (the watch goes on: a retry may follow)
//   queue(message)      while it waits: its place in line (queue_position, 0: next) and starts_in_seconds
//   status(state, info) connection state: "connecting", "live", "reconnecting" ({attempt, delay,
//                       restart}), "offline" ({attempt, delay}), "ended" (task complete)
//   unknown(taskId)     the server does not know the task or will not show it (4404 / HTTP 404), or
//                       it was deleted
//   protocolError(message)
// methods: start(), stop(), reconnectNow()
(function (global) {
  "use strict";

  var RESTART_CODES = [1012, 4012];

  function TaskProgress(taskId, handlers, options) {
    options = options || {};
    this.taskId = taskId;
    this.handlers = handlers || {};
    this.base = options.base || "";
    this.token = options.token || null;
    this.heartbeatInterval = (options.heartbeatInterval || 30) * 1000;
    this.maxBackoff = (options.maxBackoff || 15) * 1000;
    this.pollInterval = (options.pollInterval || 3) * 1000;
    this.pollAfter = options.pollAfter || 3;
    this.warnAfter = options.warnAfter || 5;
    this.WebSocket = options.WebSocket || global.WebSocket;
    this.fetch = options.fetch || (global.fetch && global.fetch.bind(global));
    this.random = options.random || Math.random;
    this.lastSeq = null;
    this.finished = false;
    this.failures = 0;
    this.polling = false;
    this.socket = null;
    this.timers = {};
  }

  TaskProgress.prototype.query = function (params) {
    if (this.token) params.push("token=" + encodeURIComponent(this.token));
    return params.length ? "?" + params.join("&") : "";
  };

  TaskProgress.prototype.wsUrl = function () {
    var loc = global.location;
    var origin = this.base ? this.base.replace(/^http/, "ws") : loc.protocol.replace("http", "ws") + "//" + loc.host;
    var url = origin + "/ws/tasks/" + encodeURIComponent(this.taskId) + "/";
    return url + this.query(this.lastSeq === null ? [] : ["last_seq=" + this.lastSeq]);
  };

  TaskProgress.prototype.start = function () {
    if (!this.WebSocket) { this.poll(); return this; }
    this.emit("status", "connecting", {});
    this.connect();
    return this;
  };

  TaskProgress.prototype.stop = function () {
    this.finished = true;
    this.clearTimers();
    if (this.socket) this.socket.close(1000);
  };

  // Try the socket now (a person pressed "Reconnect now"), and start backing off afresh; a no-op
  // while the socket is open.
  TaskProgress.prototype.reconnectNow = function () {
    if (this.finished || (this.socket && this.socket.readyState === 1)) return;
    clearTimeout(this.timers.reconnect);
    this.abandon();
    this.failures = 0;
    this.emit("status", "connecting", {});
    this.connect();
  };

  TaskProgress.prototype.clearTimers = function () {
    Object.keys(this.timers).forEach(function (k) { clearTimeout(this.timers[k]); }, this);
    this.polling = false;
  };

  TaskProgress.prototype.emit = function (name, value, extra) {
    var fn = this.handlers[name];
    if (fn) { try { fn(value, extra === undefined ? this : extra, this); } catch (e) { console.error(e); } }
  };

  TaskProgress.prototype.connect = function () {
    var self = this;
    var socket = new this.WebSocket(this.wsUrl());
    this.socket = socket;
    this.watchdog();
    socket.onopen = function () { self.emit("status", "live", {}); };
    socket.onmessage = function (event) {
      // Back off anew only once the server has said something: a socket that is accepted, then
      // dropped at once (a crashing consumer, a broken proxy) must not reset the backoff.
      self.failures = 0;
      self.watchdog();
      var msg;
      try { msg = JSON.parse(event.data); } catch (e) { return; }
      self.handle(msg);
    };
    socket.onclose = function (event) {
      if (self.socket === socket) self.closed(event.code);
    };
  };

  // The socket is gone (closed, or abandoned by the watchdog): end, or reconnect after a backoff.
  TaskProgress.prototype.closed = function (code) {
    var self = this;
    clearTimeout(this.timers.watchdog);
    this.socket = null;
    if (code === 4404) { this.unknownTask(); return; }
    if (this.finished) { this.emit("status", "ended", {}); return; }
    if (RESTART_CODES.indexOf(code) >= 0) {
      // The server is restarting (a deploy): another process takes the socket now; jitter spreads
      // the reconnects of every watcher it had. Not a failure: the backoff does not grow.
      var soon = this.random() * 1000;
      this.emit("status", "reconnecting", { attempt: 1, delay: soon, restart: true });
      this.timers.reconnect = setTimeout(function () { self.connect(); }, soon);
      return;
    }
    this.failures += 1;
    var delay = Math.min(this.maxBackoff, 500 * Math.pow(2, this.failures)) * (0.5 + this.random() / 2);
    var info = { attempt: this.failures, delay: delay, restart: false };
    this.emit("status", this.failures >= this.warnAfter ? "offline" : "reconnecting", info);
    if (this.failures >= this.pollAfter) this.poll();
    this.timers.reconnect = setTimeout(function () { self.connect(); }, delay);
  };

  // No frame for 2.5 heartbeats: the connection is dead even if the browser has not noticed.
  TaskProgress.prototype.watchdog = function () {
    var self = this;
    clearTimeout(this.timers.watchdog);
    this.timers.watchdog = setTimeout(function () {
      if (!self.socket) return;
      self.abandon();
      self.closed(4000);
    }, this.heartbeatInterval * 2.5);
  };

  // Stop listening to the socket and close it without waiting: close() waits for the peer's closing
  // handshake (Chromium: up to 60 s), which a dead connection never sends, and onclose comes only then.
  TaskProgress.prototype.abandon = function () {
    var socket = this.socket;
    this.socket = null;
    if (!socket) return;
    socket.onopen = socket.onmessage = socket.onclose = null;
    try { socket.close(4000); } catch (e) { /* already closed */ }
  };

  // The server does not know the task, or will not show it (4404 on the socket, 404 over HTTP): stop.
  TaskProgress.prototype.unknownTask = function () {
    this.finished = true;
    this.clearTimers();
    this.abandon();
    this.emit("unknown", this.taskId);
  };

  TaskProgress.prototype.handle = function (msg) {
    if (msg.type === "snapshot") {
      this.lastSeq = msg.seq;
      if (msg.status === "complete") this.finished = true;
      this.emit("snapshot", msg);
      return;
    }
    if (msg.type === "progress" || msg.type === "error" || msg.type === "cancelled") {
      if (this.lastSeq !== null && msg.seq <= this.lastSeq) return; // already reflected
      this.lastSeq = msg.seq;
      if (msg.type === "error") { this.emit("error", msg); return; }
      if (msg.type === "cancelled") { this.emit("cancelled", msg); return; }
      if (msg.stage === "complete") this.finished = true;
      this.emit("progress", msg);
      return;
    }
    if (msg.type === "queue") { this.emit("queue", msg); return; }
    if (msg.type === "protocol_error") this.emit("protocolError", msg);
  };

  // HTTP fallback: the same snapshot, polled, while the socket is down.
  TaskProgress.prototype.poll = function () {
    var self = this;
    // One request chain at a time: every failed reconnect calls poll(), often while a request is out.
    if (this.polling || this.finished || !this.fetch) return;
    this.polling = true;
    var tick = function () {
      self.timers.poll = null;
      if (self.finished || (self.socket && self.socket.readyState === 1)) { self.polling = false; return; }
      self.fetch(self.base.replace(/^ws/, "http") + "/api/tasks/" + encodeURIComponent(self.taskId) + "/" + self.query([]),
                 { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) {
          if (r.status === 404) self.unknownTask();
          return r.ok ? r.json() : null;
        })
        .then(function (snap) {
          if (snap && (self.lastSeq === null || snap.seq > self.lastSeq)) self.handle(snap);
        })
        .catch(function () {})
        .then(function () {
          if (self.finished || !self.polling) { self.polling = false; return; }
          self.timers.poll = setTimeout(tick, self.pollInterval);
        });
    };
    tick();
  };

  // Marks a list of <li data-stage> in pipeline order: earlier stages done, `stage` current.
  TaskProgress.markStages = function (list, stage) {
    var items = Array.prototype.slice.call(list.querySelectorAll("li[data-stage]"));
    var at = items.map(function (li) { return li.dataset.stage; }).indexOf(stage);
    items.forEach(function (li, i) {
      li.className = i < at || stage === "complete" ? "done" : i === at ? "current" : "";
    });
  };

  global.TaskProgress = TaskProgress;
})(window);
