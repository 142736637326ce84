"""Make the README's screenshots from a real run: the embedded server, two spoken files, Chromium.

    .venv/bin/python scripts/screenshots.py [--out docs]

Writes ``page-mid-job.png`` (one file transcribing, one waiting or done) and ``page-finished.png``
(both transcripts). Needs what ``scripts/setup.sh`` installs (chromium, flite).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import ViewportSize, expect, sync_playwright  # noqa: E402

from tests.fixtures_audio import make_speech_wav  # noqa: E402
from tests.processes import migrate, project_env, runserver  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
VIEWPORT: ViewportSize = {"width": 960, "height": 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    out: Path = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SECRET_KEY", "screenshots-only-key")
    with tempfile.TemporaryDirectory(prefix="screenshots-") as tmp:
        data = Path(tmp)
        interview = make_speech_wav(data / "a", seconds_min=40).rename(data / "Interview with Ada.wav")
        memo = make_speech_wav(data / "b").rename(data / "Voice memo.wav")
        env = project_env(data / "data", PROGRESS_HEARTBEAT_INTERVAL="5")
        migrate(env)
        with runserver(env, data / "server.log") as server, sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
            page.emulate_media(reduced_motion="reduce")  # the bar drawn where it is, not mid-transition
            page.goto(server.url("/"))
            page.set_input_files("#files", [str(interview), str(memo)])
            long_row = page.locator(".row", has=page.locator(".row-name", has_text=interview.name))
            expect(long_row).to_have_attribute("data-stage", "transcribing", timeout=120_000)
            expect(long_row.locator(".row-eta")).not_to_be_empty(timeout=120_000)
            page.screenshot(path=str(out / "page-mid-job.png"))
            done = page.locator(".row[data-status=complete]")
            expect(done).to_have_count(2, timeout=300_000)
            expect(page.locator(".row[data-transcript=loaded]")).to_have_count(2, timeout=30_000)
            page.screenshot(path=str(out / "page-finished.png"), full_page=True)
            browser.close()
    print(f"wrote {out / 'page-mid-job.png'} and {out / 'page-finished.png'}")


if __name__ == "__main__":
    main()
