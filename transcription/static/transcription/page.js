// The page: uploads (several at once, a few at a time), the session's list, one connection indicator.
(function (global) {
  "use strict";

  var UPLOADS_AT_ONCE = 2;
  var el = function (id) { return document.getElementById(id); };
  var page = {
    options: JSON.parse(el("page-options").textContent),
    rows: [],
    queue: [],
    uploading: 0
  };

  function csrf() {
    var field = document.querySelector("[name=csrfmiddlewaretoken]");
    var cookie = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    return cookie ? decodeURIComponent(cookie[1]) : field ? field.value : "";
  }

  page.request = function (method, url) {
    return fetch(url, { method: method, credentials: "same-origin", headers: { "X-CSRFToken": csrf(), Accept: "application/json" } })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) { return { status: r.status, body: body }; });
      });
  };
  page.post = function (url) { return page.request("POST", url); };

  page.removeRow = function (row) {
    page.rows = page.rows.filter(function (r) { return r !== row; });
    row.el.remove();
    page.connectionChanged();
    if (el("empty") && !page.rows.length) el("empty").hidden = false;
  };

  // Jobs that ended while the tab was hidden: counted in the title until the person looks, and told
  // by a notification if they allowed it (asked only after a click on "Notify me when done").
  var title = document.title, unseen = { done: 0, failed: 0 };
  page.jobEnded = function (row, how) {
    if (!document.hidden) return;
    unseen[how] += 1;
    var parts = [];
    if (unseen.done) parts.push("✓ " + unseen.done + " done");
    if (unseen.failed) parts.push("✗ " + unseen.failed + " failed");
    document.title = parts.join(" · ") + " — " + title;
    if (global.Notification && Notification.permission === "granted") {
      new Notification(how === "done" ? "Transcribed: " + row.name : "Transcription failed: " + row.name, { tag: row.taskId });
    }
  };
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) { unseen = { done: 0, failed: 0 }; document.title = title; }
  });
  var notify = el("notify");
  if (global.Notification && Notification.permission === "default") {
    notify.hidden = false;
    notify.addEventListener("click", function () {
      Notification.requestPermission().then(function () { notify.hidden = true; });
    });
  }

  page.announce = function (text) {
    // Cleared first, so the same words twice are announced twice.
    var box = el("announcer");
    box.textContent = "";
    setTimeout(function () { box.textContent = text; }, 50);
  };

  page.add = function (opts) {
    var row = new TranscriptionRow(page, el("rows"), opts);
    page.rows.push(row);
    if (el("empty")) el("empty").hidden = true;
    return row;
  };

  // One indicator for every socket on the page: quiet while live, "Reconnecting… (attempt n)" while a
  // reconnect is pending, a warning with "Reconnect now" once reconnects keep failing (meanwhile the
  // rows are kept current over HTTP).
  page.connectionChanged = function () {
    var states = page.rows.map(function (r) { return r.connection; }).filter(Boolean);
    var worst = null;
    ["offline", "reconnecting", "connecting", "live"].some(function (name) {
      var found = states.filter(function (s) { return s.state === name; });
      if (!found.length) return false;
      worst = { state: name, attempt: Math.max.apply(null, found.map(function (s) { return s.attempt || 0; })) };
      return true;
    });
    var box = el("connection"), text = el("connection-text");
    var state = worst ? worst.state : "idle";
    box.dataset.state = state === "connecting" ? "reconnecting" : state;
    el("reconnect").hidden = state !== "offline";
    text.textContent = {
      idle: "",
      live: "Live",
      connecting: "Connecting…",
      reconnecting: "Reconnecting… (attempt " + (worst && worst.attempt) + ")",
      offline: "Connection lost: checking for updates every few seconds."
    }[state];
  };

  el("reconnect").addEventListener("click", function () {
    page.rows.forEach(function (row) { if (row.client) row.client.reconnectNow(); });
  });

  // Seconds of audio, from the browser's own decoder; null when it cannot tell.
  function duration(file) {
    return new Promise(function (resolve) {
      var audio = document.createElement("audio"), url = URL.createObjectURL(file);
      var done = function (value) { URL.revokeObjectURL(url); resolve(value); };
      audio.preload = "metadata";
      audio.onloadedmetadata = function () { done(isFinite(audio.duration) ? audio.duration : null); };
      audio.onerror = function () { done(null); };
      audio.src = url;
    });
  }

  function enqueue(files) {
    Array.prototype.forEach.call(files, function (file) {
      var row = page.add({ name: file.name, size: file.size, prepend: true });
      row.badge("Waiting to upload", "waiting");
      duration(file).then(function (seconds) { if (seconds) row.describe(null, file.size, seconds); });
      if (file.size > page.options.maxUploadBytes) {
        row.refuse("This file is too large: at most " + TranscriptionRow.size(page.options.maxUploadBytes) + " may be uploaded.");
        return;
      }
      PendingUploads.keep(file);
      page.queue.push({ file: file, row: row });
    });
    pump();
  }

  function pump() {
    while (page.uploading < UPLOADS_AT_ONCE && page.queue.length) {
      var next = page.queue.shift();
      page.uploading += 1;
      upload(next.file, next.row).then(function () { page.uploading -= 1; pump(); });
    }
  }

  // One upload made at a time: a new visitor's first one gives them their session cookie, which every
  // later one must carry (two at once would each make a session, and one upload would be orphaned).
  var creating = Promise.resolve();
  // After a drop the upload waits, then goes on from the server's offset: soon at first, then every 30 s
  // for half an hour.
  var RETRIES = [0, 1000, 2000, 4000, 8000, 15000].concat(Array(60).fill(30000));

  // Send a file as a resumable upload (tus, /api/uploads/): creating it makes its task, so the row
  // watches from the first byte; a dropped connection pauses the row and the upload resumes by itself.
  // An upload of the same file left unfinished (a closed tab) goes on where the server has it.
  function upload(file, row) {
    return new Promise(function (resolve) {
      var watching = false, made;
      var answered = new Promise(function (done) { made = done; });
      var up = new tus.Upload(file, {
        endpoint: "/api/uploads/",
        chunkSize: page.options.uploadChunkBytes,
        retryDelays: RETRIES,
        metadata: { filename: file.name },
        removeFingerprintOnSuccess: true,
        onAfterResponse: function (req, res) {
          var taskId = res.getHeader("Upload-Task-Id");
          made();
          if (taskId && !watching) {
            watching = true;
            page.rows.filter(function (r) { return r !== row && r.taskId === taskId; }).forEach(function (r) {
              r.el.remove();
              page.removeRow(r);  // the list's row of an unfinished upload: this row goes on with it
            });
            var token = res.getHeader("Upload-Watch-Token") || row.token;
            var share = "/transcriptions/" + taskId + "/" + (token ? "?token=" + token : "");
            row.watch({ task_id: taskId, token: token, share_url: share, stage: "uploading", owned: true });
          }
          if (res.getStatus() < 300) row.uploadResumed();
        },
        onShouldRetry: function (err) {
          var status = err.originalResponse ? err.originalResponse.getStatus() : 0;
          if (status >= 400 && status < 500 && status !== 409 && status !== 423) return false;
          row.uploadPaused();
          return true;
        },
        onProgress: function (sent, total) { row.uploadProgress(sent, total); },
        onSuccess: function () { PendingUploads.forget(file); resolve(); },
        onError: function (err) {
          made();
          PendingUploads.forget(file);  // refused, or given up after half an hour: not sent again
          var res = err.originalResponse, body = {};
          try { body = JSON.parse(res ? res.getBody() : "{}"); } catch (e) { /* not JSON */ }
          row.refuse(body.detail || body.error || "The upload failed; check the connection and try again.");
          resolve();
        }
      });
      var turn = creating.then(function () { return up.findPreviousUploads(); }).then(function (previous) {
        if (previous.length) up.resumeFromPreviousUpload(previous[0]);
        up.start();
      });
      creating = turn.then(function () { return answered; });
    });
  }

  function wireUploads() {
    var drop = el("drop"), input = el("files");
    input.addEventListener("change", function () { enqueue(input.files); input.value = ""; });
    ["dragenter", "dragover"].forEach(function (name) {
      drop.addEventListener(name, function (e) { e.preventDefault(); drop.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      drop.addEventListener(name, function (e) { e.preventDefault(); drop.classList.remove("over"); });
    });
    drop.addEventListener("drop", function (e) { if (e.dataTransfer) enqueue(e.dataTransfer.files); });
  }

  function loadList() {
    fetch("/api/transcriptions/", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : { tasks: [] }; })
      .then(function (list) {
        list.tasks.forEach(function (task) {
          if (page.rows.some(function (r) { return r.taskId === task.task_id; })) return;
          page.add({ name: task.name || task.task_id, size: task.size, duration: task.duration }).watch(task);
        });
      });
  }

  if (page.options.mode === "task") {
    var task = page.options.task;
    page.add({ name: task.name || "Transcription", size: task.size, duration: task.duration })
      .watch(Object.assign({ expanded: true }, task));
  } else {
    wireUploads();
    loadList();
    PendingUploads.all().then(function (files) { if (files.length) enqueue(files); });
  }
  global.transcriptionPage = page;
})(window);
