// The plain task page (progress/task.html): one task's stages, bar and error, live.
(function () {
  var el = function (id) { return document.getElementById(id); };
  function show(stage, percentage, message) {
    el("error").style.display = "none";  // a retry: the failure is past
    delete document.body.dataset.failed;
    TaskProgress.markStages(el("stages"), stage);
    el("bar").value = percentage;
    el("message").textContent = message || "";
    document.body.dataset.stage = stage;
    document.body.dataset.percentage = percentage;
  }
  function fail(error) {
    el("error").style.display = "block";
    el("error-user").textContent = error.user_message;
    el("error-detail").textContent = error.technical_detail || "";
    document.body.dataset.failed = error.error_code;
  }
  var options = JSON.parse(document.getElementById("client-options").textContent);
  new TaskProgress(options.taskId, {
    snapshot: function (s) { show(s.stage, s.percentage, s.message); if (s.status === "failed") fail(s.error); },
    progress: function (p) { show(p.stage, p.percentage, p.message); },
    error: fail,
    unknown: function () { el("status").textContent = "no such task"; },
    status: function (s) { el("status").textContent = s; }
  }, options).start();
})();
