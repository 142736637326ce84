// For tests/system/test_client_js.py: a WebSocket stand-in the test drives, a fetch that answers what the test
// sets, and a client whose every event is recorded. random() is 0.5: jittered delays are 0.75 of their bound.
window.sockets = [];
window.events = [];
window.fetches = [];
window.pollAnswer = { status: 200, body: null };
function FakeSocket(url) { this.url = url; this.readyState = 0; this.closedWith = null; sockets.push(this); }
FakeSocket.prototype.open = function () { this.readyState = 1; if (this.onopen) this.onopen({}); };
FakeSocket.prototype.receive = function (msg) { if (this.onmessage) this.onmessage({ data: JSON.stringify(msg) }); };
FakeSocket.prototype.drop = function (code) { this.readyState = 3; if (this.onclose) this.onclose({ code: code }); };
FakeSocket.prototype.close = function (code) { this.closedWith = code; this.readyState = 3; };
function fakeFetch(url) {
  fetches.push(url);
  var answer = window.pollAnswer;
  return Promise.resolve({ status: answer.status, ok: answer.status === 200,
                           json: function () { return Promise.resolve(answer.body); } });
}
function record(name) {
  return function (value, info) {
    events.push(name === "status" ? ["status", value, info.attempt || 0, !!info.restart]
                : [name, value && value.seq !== undefined ? value.seq : value, value && value.attempt]);
  };
}
window.make = function (options) {
  var handlers = {};
  ["snapshot", "progress", "error", "status", "unknown", "protocolError"].forEach(function (n) { handlers[n] = record(n); });
  window.client = new TaskProgress("t1", handlers, Object.assign(
    { WebSocket: FakeSocket, fetch: fakeFetch, random: function () { return 0.5; }, heartbeatInterval: 1,
      token: "tok" }, options || {})).start();
  return sockets.length;
};
window.last = function () { return sockets[sockets.length - 1]; };
