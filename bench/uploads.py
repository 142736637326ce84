"""``python -m bench.uploads [--mb N]``: a chunked (tus) upload's throughput against one request's.

The same file both ways to one uvicorn on loopback, alternating, two rounds. The file is a WAV whose
header says it is longer than the server allows, so both end alike once every byte has arrived
(413 ``audio_too_long``) and no job runs: what is measured is the transfer and the storing.
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from .stack import PY, ROOT, Stack

CHUNK = 8 * 1024 * 1024
BLOCK = 1024 * 1024


def _wav(path: Path, size: int) -> None:
    data = size - 44
    header = b"RIFF" + (36 + data).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    header += (1).to_bytes(2, "little") + (2).to_bytes(2, "little") + (48000).to_bytes(4, "little")
    header += (192000).to_bytes(4, "little") + (4).to_bytes(2, "little") + (16).to_bytes(2, "little")
    header += b"data" + data.to_bytes(4, "little")
    with path.open("wb") as out:
        out.write(header)
        for _ in range(data // BLOCK):
            out.write(b"\x10\x00" * (BLOCK // 2))
        out.write(b"\x00" * (data % BLOCK))


def single(port: int, key: str, path: Path) -> float:
    """Seconds for one multipart POST of the file to /api/tasks/."""
    boundary = uuid.uuid4().hex
    disposition = f'Content-Disposition: form-data; name="file"; filename="{path.name}"'
    head = f"--{boundary}\r\n{disposition}\r\n\r\n".encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = path.stat().st_size
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    connection.putrequest("POST", "/api/tasks/")
    connection.putheader("Authorization", f"Bearer {key}")
    connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    connection.putheader("Content-Length", str(len(head) + size + len(tail)))
    connection.endheaders()
    connection.send(head)
    with path.open("rb") as source:
        for block in iter(lambda: source.read(BLOCK), b""):
            connection.send(block)
    connection.send(tail)
    response = connection.getresponse()
    response.read()
    connection.close()
    return time.perf_counter() - started


def chunked(port: int, key: str, path: Path) -> float:
    """Seconds for a tus upload of the file in CHUNK-sized PATCHes on one connection."""
    size = path.stat().st_size
    auth = {"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0"}
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    connection.request("POST", "/api/uploads/", headers={**auth, "Upload-Length": str(size)})
    created = connection.getresponse()
    created.read()
    location = created.getheader("Location") or ""
    offset = 0
    with path.open("rb") as source:
        while offset < size:
            chunk = source.read(CHUNK)
            headers = {
                **auth,
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            }
            connection.request("PATCH", location, chunk, headers)
            answer = connection.getresponse()
            answer.read()
            offset += len(chunk)
    connection.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=200, help="the file's size in MB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-uploads-") as tmp:
        workdir = Path(tmp)
        stack = Stack(workdir)
        try:
            # Every process of the run reads these: refused once whole, and no rate limit on the bench.
            os.environ.update(TRANSCRIPTION_MAX_AUDIO_SECONDS="1", TRANSCRIPTION_UPLOADS_PER_MINUTE="1000")
            stack.migrate()
            env = stack.env()
            make = "from django.contrib.auth.models import User; User.objects.create_user('bench')"
            subprocess.run(
                [PY, "manage.py", "shell", "-c", make], cwd=ROOT, env=env, check=True, capture_output=True
            )
            command = [PY, "manage.py", "create_api_key", "bench"]
            out = subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
            key = out.stdout.decode().strip().splitlines()[-1]
            proc, url = stack.server("uvicorn-sansio+pubsub")
            port = int(url.rsplit(":", 1)[1])
            path = workdir / "upload.wav"
            _wav(path, args.mb * 1024 * 1024)
            rows = []
            for round_ in (1, 2):
                one, tus = single(port, key, path), chunked(port, key, path)
                rows.append((round_, args.mb / one, args.mb / tus))
            shape = f"one request vs tus in {CHUNK >> 20} MiB chunks"
            print(f"\nU  one {args.mb} MB file, uvicorn on loopback: {shape}")
            print(f"{'round':<8}{'one request MB/s':>18}{'chunked MB/s':>16}{'x one request':>16}")
            for round_, one_rate, tus_rate in rows:
                print(f"{round_:<8}{one_rate:>18.1f}{tus_rate:>16.1f}{tus_rate / one_rate:>16.2f}")
            stack.stop(proc)
        finally:
            stack.close()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
