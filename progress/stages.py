"""A project's stages: the order its tasks go through, declared in ``PROGRESS["STAGES"]``.

The protocol owns two stage names: ``queued`` (waiting for a worker: the fair queue's line, and the
last stage reported before a job runs) and ``complete`` (the terminal success, always last). A project
declares the rest around ``queued``: stages before it happen before any job runs (an upload, say) and
start no liveness clock; stages after it are the job's own. Pure rules, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["COMPLETE", "DEFAULT", "QUEUED", "Stages"]

QUEUED = "queued"
COMPLETE = "complete"
DEFAULT = (QUEUED, "running")
"""What a project that declares nothing gets: a task waits, runs, completes."""
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True)
class Stages:
    """The ordered stages of every task of a project, ``complete`` last."""

    names: tuple[str, ...]
    _rank: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = self.names
        bad = [n for n in names if not isinstance(n, str) or not _NAME.match(n)]
        if bad:
            raise ValueError(f"stage names are lowercase words of at most 32 characters, not {bad!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"a stage is declared twice in {list(names)!r}")
        if QUEUED not in names:
            raise ValueError(f"the stages must include {QUEUED!r}, where a task waits for a worker")
        if names[-1] != COMPLETE or names.count(COMPLETE) != 1:
            raise ValueError(f"{COMPLETE!r} is the protocol's last stage; declare the stages before it")
        object.__setattr__(self, "_rank", {name: i for i, name in enumerate(names)})

    @classmethod
    def declared(cls, working: Iterable[str]) -> Stages:
        """The stages a project declares (without ``complete``, which follows them)."""
        return cls((*working, COMPLETE))

    def __contains__(self, stage: object) -> bool:
        return stage in self._rank

    def rank(self, stage: str) -> int:
        """Position in the order; a report may never go to a lower rank. KeyError if unknown."""
        return self._rank[stage]

    def before_job(self, stage: str) -> bool:
        """Whether ``stage`` is reported before a job runs (up to ``queued``): no liveness clock yet."""
        return self._rank[stage] <= self._rank[QUEUED]

    @property
    def working(self) -> tuple[str, ...]:
        """Every stage but ``complete``, as declared."""
        return self.names[:-1]
