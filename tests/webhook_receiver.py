"""A webhook receiver for the tests, in a process of its own on 127.0.0.1.

``python -m tests.webhook_receiver PORT LOG ANSWERS``: answers each POST with the next status of
ANSWERS (comma-separated; the last repeats) and appends one JSON line per request to LOG: the
status it answered, the headers and the body.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    port, log, answers = int(sys.argv[1]), Path(sys.argv[2]), [int(a) for a in sys.argv[3].split(",")]
    served = 0

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            nonlocal served
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status = answers[min(served, len(answers) - 1)]
            served += 1
            line = {"status": status, "headers": dict(self.headers), "body": body.decode()}
            with log.open("a") as out:
                out.write(json.dumps(line) + "\n")
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
