"""The watcher's rules without a socket: resume, gaps, heartbeats' checks, client frames, closing."""

from __future__ import annotations

import json

from progress.limits import FrameBucket
from progress.snapshots import View
from progress.watcher import (
    CATCH_UP,
    CLOSE_NORMAL,
    CLOSE_NOT_FOUND,
    CLOSE_POLICY,
    SEND,
    SEND_AND_CLOSE,
    SKIP,
    Close,
    Effect,
    Read,
    Watcher,
)


def make_view(seq: int = 3, ended: bool = False, final: bool = False) -> View:
    frames = tuple((n, f'{{"seq":{n}}}') for n in range(1, seq + 1))
    return View(
        seq=seq,
        ended=ended,
        final=final,
        snapshot=f'{{"type":"snapshot","seq":{seq}}}',
        terminal=frames[-1][1] if ended else None,
        frames=frames,
    )


class Allow:
    """A frame bucket that allows ``left`` frames, whatever the time."""

    def __init__(self, left: int = 1000) -> None:
        self.left = left

    def take(self, now: float) -> bool:
        self.left -= 1
        return self.left >= 0


def make_watcher(bucket: Allow | FrameBucket | None = None, max_errors: int = 3) -> Watcher:
    return Watcher(bucket or Allow(), max_frame_chars=100, max_protocol_errors=max_errors)


def kinds(effects: list[Effect]) -> list[str]:
    """Each effect as the frame's type (or its error code), or ``close <code>``."""
    out = []
    for effect in effects:
        if isinstance(effect, Close):
            out.append(f"close {effect.code}")
        else:
            frame = json.loads(effect)
            out.append(frame.get("code") or frame.get("type") or f"seq {frame['seq']}")
    return out


def test_watcher_new_gets_the_snapshot_and_its_seq():
    watcher = make_watcher()
    assert watcher.begin(None) == []
    assert kinds(watcher.view_read(make_view(3))) == ["snapshot"]
    assert watcher.last_seq == 3
    assert not watcher.finished


def test_watcher_resume_gets_only_what_follows_last_seq():
    watcher = make_watcher()
    assert watcher.begin("1") == []
    assert kinds(watcher.view_read(make_view(3))) == ["seq 2", "seq 3"]
    assert watcher.last_seq == 3


def test_watcher_resume_at_the_newest_seq_gets_nothing():
    watcher = make_watcher()
    watcher.begin("3")
    assert watcher.view_read(make_view(3)) == []


def test_watcher_bad_last_seq_is_an_error_then_a_snapshot():
    for raw in ("-1", "abc", "1e3", "9" * 19, ""):
        watcher = make_watcher()
        assert kinds(watcher.begin(raw)) == ["bad_last_seq"]
        assert kinds(watcher.view_read(make_view(2))) == ["snapshot"]


def test_watcher_last_seq_from_the_future_is_told_and_sent_a_snapshot():
    watcher = make_watcher()
    watcher.begin("9")
    assert kinds(watcher.view_read(make_view(3))) == ["bad_last_seq", "snapshot"]
    assert watcher.last_seq == 3


def test_watcher_wants_a_fresh_read_when_the_kept_view_is_behind():
    watcher = make_watcher()
    watcher.begin("5")
    assert watcher.wants_fresher(make_view(3))
    assert not watcher.wants_fresher(make_view(5))
    assert not watcher.wants_fresher(None)


def test_watcher_new_never_wants_a_fresher_read():
    watcher = make_watcher()
    watcher.begin(None)
    assert not watcher.wants_fresher(make_view(1))


def test_watcher_task_gone_closes_as_not_found():
    watcher = make_watcher()
    watcher.begin(None)
    assert watcher.view_read(None) == [Close(CLOSE_NOT_FOUND)]
    assert watcher.finished


def test_watcher_completed_task_sends_snapshot_terminal_then_closes():
    watcher = make_watcher()
    watcher.begin(None)
    assert kinds(watcher.view_read(make_view(4, ended=True, final=True))) == [
        "snapshot",
        "seq 4",
        f"close {CLOSE_NORMAL}",
    ]


def test_watcher_failed_task_stays_open_for_a_retry():
    watcher = make_watcher()
    watcher.begin(None)
    assert kinds(watcher.view_read(make_view(4, ended=True))) == ["snapshot", "seq 4"]
    assert not watcher.finished


def test_watcher_event_next_is_sent():
    watcher = make_watcher()
    watcher.begin(None)
    watcher.view_read(make_view(3))
    assert watcher.event(4, 3, final=False) == SEND
    assert watcher.last_seq == 4


def test_watcher_event_seen_already_is_skipped():
    watcher = make_watcher()
    watcher.begin(None)
    watcher.view_read(make_view(3))
    assert watcher.event(3, 2, final=False) == SKIP
    assert watcher.event(2, 1, final=False) == SKIP
    assert watcher.last_seq == 3


def test_watcher_event_after_a_gap_catches_up():
    watcher = make_watcher()
    watcher.begin(None)
    watcher.view_read(make_view(3))
    assert watcher.event(6, 5, final=False) == CATCH_UP
    assert watcher.last_seq == 3
    assert kinds(watcher.view_read(make_view(6))) == ["seq 4", "seq 5", "seq 6"]


def test_watcher_event_may_skip_seqs_nobody_was_sent():
    # A coalesced report takes a seq but is never published: prev_seq bridges it.
    watcher = make_watcher()
    watcher.begin(None)
    watcher.view_read(make_view(3))
    assert watcher.event(5, 3, final=False) == SEND


def test_watcher_final_event_closes_and_nothing_follows():
    watcher = make_watcher()
    watcher.begin(None)
    watcher.view_read(make_view(3))
    assert watcher.event(4, 3, final=True) == SEND_AND_CLOSE
    assert (watcher.finished, watcher.close_code) == (True, CLOSE_NORMAL)
    assert watcher.event(5, 4, final=False) == SKIP
    assert watcher.view_read(make_view(5)) == []
    assert watcher.checked(9) is None


def test_watcher_heartbeat_check_newer_reads_the_database():
    watcher = make_watcher()
    watcher.begin(None)
    watcher.view_read(make_view(3))
    assert watcher.checked(3) is None
    assert watcher.checked(2) is None
    assert watcher.checked(4) is Read.FRESH


def test_watcher_heartbeat_check_deleted_closes_as_not_found():
    watcher = make_watcher()
    watcher.begin(None)
    watcher.view_read(make_view(3))
    assert watcher.checked(-1) == Close(CLOSE_NOT_FOUND)
    assert watcher.finished


def test_watcher_ping_is_answered_with_pong():
    assert kinds(make_watcher().frame(0.0, '{"type": "ping"}')) == ["pong"]


def test_watcher_bad_frames_each_get_their_error():
    cases = {
        None: "binary_frame",
        "x" * 101: "frame_too_large",
        "{": "malformed_json",
        "[" * 90: "malformed_json",
        "[1]": "not_an_object",
        '{"type": "shout"}': "unknown_type",
        '{"type": 7}': "unknown_type",
    }
    for text, code in cases.items():
        watcher = make_watcher(max_errors=10)
        assert kinds(watcher.frame(0.0, text)) == [code]
        assert not watcher.finished


def test_watcher_too_many_bad_frames_close_with_policy():
    watcher = make_watcher(max_errors=2)
    assert kinds(watcher.frame(0.0, "{")) == ["malformed_json"]
    effects = watcher.frame(0.0, "{")
    assert kinds(effects) == ["malformed_json", "too_many_errors", f"close {CLOSE_POLICY}"]
    assert effects[-1] == Close(CLOSE_POLICY, "sent too many bad frames")
    assert watcher.frame(0.0, '{"type": "ping"}') == []


def test_watcher_frames_too_fast_close_with_policy(settings):
    settings.PROGRESS = {**settings.PROGRESS, "CLIENT_FRAME_BURST": 2, "CLIENT_FRAMES_PER_SECOND": 1}
    watcher = make_watcher(FrameBucket(0.0))
    ping = '{"type": "ping"}'
    assert kinds(watcher.frame(0.0, ping) + watcher.frame(0.0, ping)) == ["pong", "pong"]
    assert kinds(watcher.frame(1.0, ping)) == ["pong"]  # a second later, one more frame is allowed
    effects = watcher.frame(1.0, ping)
    assert kinds(effects) == ["too_many_frames", f"close {CLOSE_POLICY}"]
    assert effects[-1] == Close(CLOSE_POLICY, "sent frames too fast")


def test_watcher_finish_twice_closes_once():
    watcher = make_watcher()
    assert watcher.finish(4503) == [Close(4503)]
    assert watcher.finish(CLOSE_NORMAL) == []
    assert watcher.close_code == 4503
