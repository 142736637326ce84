// Files whose upload has not finished, kept in the browser (IndexedDB): after a reload, or a closed
// and reopened tab, the page sends them again, and tus goes on from where the server has each.
(function (global) {
  "use strict";

  var DB = "transcription-uploads", STORE = "files";

  function open() {
    return new Promise(function (resolve, reject) {
      var request = global.indexedDB.open(DB, 1);
      request.onupgradeneeded = function () { request.result.createObjectStore(STORE, { keyPath: "key" }); };
      request.onsuccess = function () { resolve(request.result); };
      request.onerror = function () { reject(request.error); };
    });
  }

  // Run `use(store)` in one transaction; resolves with the result of the request it returns.
  function transaction(mode, use) {
    return open().then(function (db) {
      return new Promise(function (resolve, reject) {
        var tx = db.transaction(STORE, mode), request = use(tx.objectStore(STORE));
        tx.oncomplete = function () { db.close(); resolve(request.result); };
        tx.onerror = tx.onabort = function () { db.close(); reject(tx.error); };
      });
    });
  }

  function key(file) { return [file.name, file.size, file.lastModified].join(":"); }

  global.PendingUploads = {
    keep: function (file) {
      return transaction("readwrite", function (s) { return s.put({ key: key(file), file: file }); })
        .catch(function () { /* private mode or no room: the upload still goes, it is just not kept */ });
    },
    forget: function (file) {
      return transaction("readwrite", function (s) { return s.delete(key(file)); }).catch(function () {});
    },
    all: function () {
      return transaction("readonly", function (s) { return s.getAll(); })
        .then(function (rows) { return (rows || []).map(function (r) { return r.file; }); })
        .catch(function () { return []; });
    }
  };
})(window);
