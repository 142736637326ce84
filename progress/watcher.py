"""One watcher's rules, with no I/O: what its socket is sent, what it must read, and when it closes.

The consumer (progress.consumers) does the I/O: it hands a ``Watcher`` what arrived (a view read
from the database, a published event, a heartbeat's check, a client frame) and does what it is
told back: send these frames, read the task, close with this code. So every rule of resume,
seq gaps and closing is tested here without a socket, a layer or a clock.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Protocol

from .schemas import PongMessage, ProtocolErrorCode, ProtocolErrorMessage

__all__ = [
    "CATCH_UP",
    "CLOSE_LAYER_DOWN",
    "CLOSE_NORMAL",
    "CLOSE_NOT_FOUND",
    "CLOSE_POLICY",
    "CLOSE_TOO_MANY_SOCKETS",
    "CLOSE_TOO_SLOW",
    "SEND",
    "SEND_AND_CLOSE",
    "SKIP",
    "Close",
    "Read",
    "Watcher",
]

# Private 4xxx codes: daphne (autobahn) lets an application send only 1000 and 3000-4999.
CLOSE_NORMAL = 1000
CLOSE_POLICY = 4008
"""Too many bad frames, or frames faster than CLIENT_FRAMES_PER_SECOND (as 1008, policy violation)."""
CLOSE_TOO_SLOW = 4013
"""The client did not take its frames: more than MAX_QUEUED_BYTES waited for it (as 1013, try again later)."""
CLOSE_TOO_MANY_SOCKETS = 4029
"""The client address holds MAX_CONNECTIONS_PER_CLIENT sockets on this server process (as HTTP 429)."""
CLOSE_NOT_FOUND = 4404
"""No such task, or the watcher may not see it: the two are not told apart."""
CLOSE_LAYER_DOWN = 4503
"""The channel layer failed: the client resumes with ?last_seq."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close the socket with ``code``; ``why``, when set, is logged as the client's fault."""

    code: int
    why: str | None = None


Effect = str | Close
"""A frame to send (already encoded), or the close that ends the socket."""


class Read(enum.Enum):
    """A read the consumer must make and hand back to ``Watcher.view_read``."""

    KEPT = "kept"
    """The process's kept view of the task (progress.snapshots), or a read shared with other sockets."""
    FRESH = "fresh"
    """The database now: the heartbeat or a resume found the kept view behind."""


SEND, SKIP, SEND_AND_CLOSE, CATCH_UP = range(4)
"""What to do with a published event (``Watcher.event``): plain ints, as this is asked per frame."""


class View(Protocol):
    """What the watcher needs of a task's view (progress.snapshots.View)."""

    @property
    def seq(self) -> int: ...
    @property
    def ended(self) -> bool: ...
    @property
    def final(self) -> bool: ...
    @property
    def snapshot(self) -> str: ...
    @property
    def terminal(self) -> str | None: ...
    def after(self, seq: int) -> list[tuple[int, str]]: ...


class Bucket(Protocol):
    """The client's frame allowance (progress.limits.FrameBucket)."""

    def take(self, now: float) -> bool: ...


def error_frame(code: ProtocolErrorCode, detail: str) -> str:
    """A protocol error, encoded."""
    return ProtocolErrorMessage(code=code, detail=detail).model_dump_json()


class Watcher:
    """The state of one watcher of one task: the last seq it was sent, and whether it has ended."""

    __slots__ = (
        "close_code",
        "finished",
        "frames",
        "last_seq",
        "max_chars",
        "max_errors",
        "protocol_errors",
        "resuming",
    )

    def __init__(self, frames: Bucket, max_frame_chars: int, max_protocol_errors: int) -> None:
        self.frames = frames
        self.max_chars = max_frame_chars
        self.max_errors = max_protocol_errors
        self.last_seq = 0
        """The seq of the last frame about the task this watcher was sent."""
        self.resuming = False
        """Whether the next view is sent as what follows ``last_seq`` (else as a snapshot)."""
        self.finished = False
        self.close_code: int | None = None
        self.protocol_errors = 0

    def begin(self, last_seq: str | None) -> list[Effect]:
        """The socket is accepted; ``last_seq`` is the query's, if any. Then read the view (``Read.KEPT``)."""
        if last_seq is None:
            return []
        if not last_seq.isdigit() or len(last_seq) > 18:
            detail = f"last_seq must be a non-negative integer, not {last_seq[:32]!r}; sent a snapshot"
            return self._protocol_error(ProtocolErrorCode.BAD_LAST_SEQ, detail)
        self.last_seq = int(last_seq)
        self.resuming = True
        return []

    def wants_fresher(self, view: View | None) -> bool:
        """A kept view older than what the watcher claims to have seen: read the database (``Read.FRESH``)."""
        return self.resuming and view is not None and self.last_seq > view.seq

    def view_read(self, view: View | None) -> list[Effect]:
        """The task's view, read as asked: a snapshot for a new watcher, else what follows ``last_seq``."""
        if self.finished:
            return []
        if view is None:  # deleted since the watcher was let in
            return self.finish(CLOSE_NOT_FOUND)
        out: list[Effect] = []
        if self.resuming and self.last_seq > view.seq:
            # A seq from the future (another server's database, a forged value): start over with a
            # snapshot, which tells the client to forget the seq it had.
            detail = f"last_seq {self.last_seq} is beyond this task's seq {view.seq}; sent a snapshot"
            out += self._protocol_error(ProtocolErrorCode.BAD_LAST_SEQ, detail)
            self.resuming = False
            if self.finished:
                return out
        if self.resuming:
            for seq, frame in view.after(self.last_seq):
                out.append(frame)
                self.last_seq = seq
        else:
            out.append(view.snapshot)
            self.last_seq = view.seq
            if view.ended and view.terminal is not None:
                out.append(view.terminal)  # a late watcher of an ended task is told how it ended
        self.resuming = True  # from now on, what the watcher lacks is what follows last_seq
        if view.final:
            out += self.finish(CLOSE_NORMAL)
        return out

    def event(self, seq: int, prev_seq: int, final: bool) -> int:
        """A published event: ``SEND`` it if it is the next one; a gap is a ``CATCH_UP`` from a read."""
        if self.finished or seq <= self.last_seq:
            return SKIP
        if prev_seq > self.last_seq:
            return CATCH_UP  # something between was lost (layer overload, a restart)
        self.last_seq = seq
        if final:
            self.finished = True
            self.close_code = CLOSE_NORMAL
            return SEND_AND_CLOSE
        return SEND

    def checked(self, newest_seq: int) -> Read | Close | None:
        """The task's newest seq, read at a heartbeat (-1: deleted): catch up, close, or nothing."""
        if self.finished:
            return None
        if newest_seq < 0:  # deleted, and the live path lost the news
            self.finished = True
            self.close_code = CLOSE_NOT_FOUND
            return Close(CLOSE_NOT_FOUND)
        return Read.FRESH if newest_seq > self.last_seq else None

    def frame(self, now: float, text: str | None) -> list[Effect]:
        """A frame from the client (``text`` None: a binary one), at ``now`` on the frame bucket's clock."""
        if self.finished:
            return []  # closing: what the client still sends is not answered
        if not self.frames.take(now):
            error = error_frame(ProtocolErrorCode.TOO_MANY_FRAMES, "frames arrive faster than allowed")
            return [error, *self.finish(CLOSE_POLICY, "sent frames too fast")]
        if text is None:
            return self._protocol_error(ProtocolErrorCode.BINARY_FRAME, "frames must be JSON text")
        if len(text) > self.max_chars:
            detail = f"frames are limited to {self.max_chars} characters"
            return self._protocol_error(ProtocolErrorCode.FRAME_TOO_LARGE, detail)
        try:
            content = json.loads(text)
        except ValueError as exc:
            return self._protocol_error(ProtocolErrorCode.MALFORMED_JSON, f"invalid JSON: {exc}")
        except RecursionError:
            return self._protocol_error(ProtocolErrorCode.MALFORMED_JSON, "invalid JSON: nested too deeply")
        if not isinstance(content, dict):
            detail = "a frame must be a JSON object with a 'type'"
            return self._protocol_error(ProtocolErrorCode.NOT_AN_OBJECT, detail)
        kind = content.get("type")
        if kind == "ping":
            return [PongMessage().model_dump_json()]
        kind = kind[:32] if isinstance(kind, str) else type(kind).__name__
        detail = f"unknown message type {kind!r}; clients may send 'ping'"
        return self._protocol_error(ProtocolErrorCode.UNKNOWN_TYPE, detail)

    def finish(self, code: int, why: str | None = None) -> list[Effect]:
        """End the watch with ``code``: the close to make, or nothing if it has ended already."""
        if self.finished:
            return []
        self.finished = True
        self.close_code = code
        return [Close(code, why)]

    def _protocol_error(self, code: ProtocolErrorCode, detail: str) -> list[Effect]:
        self.protocol_errors += 1
        out: list[Effect] = [error_frame(code, detail)]
        if self.protocol_errors >= self.max_errors:
            out.append(error_frame(ProtocolErrorCode.TOO_MANY_ERRORS, "closing after repeated bad frames"))
            out += self.finish(CLOSE_POLICY, "sent too many bad frames")
        return out
