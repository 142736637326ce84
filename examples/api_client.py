"""Upload a recording with an API key, follow it live, save its SRT: api_client.py URL KEY FILE."""

import asyncio
import json
import sys
import urllib.request
import uuid
from pathlib import Path

import websockets

base, key, audio = sys.argv[1].rstrip("/"), sys.argv[2], Path(sys.argv[3])
auth = {"Authorization": f"Bearer {key}"}
mark = uuid.uuid4().hex
head = f'--{mark}\r\nContent-Disposition: form-data; name="file"; filename="{audio.name}"\r\n\r\n'
body = head.encode() + audio.read_bytes() + f"\r\n--{mark}--\r\n".encode()
form = {"Content-Type": f"multipart/form-data; boundary={mark}"}
task = json.load(urllib.request.urlopen(urllib.request.Request(f"{base}/api/tasks/", body, auth | form)))


async def follow() -> None:
    url = base.replace("http", "ws", 1) + f"/ws/tasks/{task['task_id']}/"
    async with websockets.connect(url, additional_headers=auth) as ws:  # closed once it completes
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] in ("error", "cancelled"):
                sys.exit(f"the transcription ended: {frame['type']}")
            if "stage" in frame:
                print(frame["stage"], frame.get("percentage", ""), flush=True)


asyncio.run(follow())
srt = urllib.request.Request(f"{base}/api/tasks/{task['task_id']}/result.srt", None, auth)
Path(f"{audio}.srt").write_bytes(urllib.request.urlopen(srt).read())
