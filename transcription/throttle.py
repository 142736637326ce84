"""How often a client may do a costly thing: sliding windows of hits, kept in the database.

The database is what every server process shares (SQLite or PostgreSQL), so a limit holds across
processes without another service; the check and the hit are one transaction. Keys are hashed: a
username or an address is never stored as typed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.db import transaction

from .models import Hit

__all__ = ["Budget", "Window", "forget_before", "hits", "key", "record", "refused", "spend", "take"]

Clock = Callable[[], float]


@dataclass(frozen=True)
class Window:
    """At most ``limit`` hits in any ``seconds``: the rule, with no I/O."""

    limit: int
    seconds: float

    def retry_after(self, times: Sequence[float], now: float) -> float | None:
        """Seconds until one more hit is allowed, given the hit times (ascending); None: allowed now."""
        recent = [t for t in times if t > now - self.seconds]
        if len(recent) < self.limit:
            return None
        return max(0.0, recent[-self.limit] + self.seconds - now)


@dataclass(frozen=True)
class Budget:
    """At most ``limit`` in total (bytes, say) in any ``seconds``: the rule, with no I/O."""

    limit: int
    seconds: float

    def retry_after(self, spent: Sequence[tuple[float, int]], amount: int, now: float) -> float | None:
        """Seconds until ``amount`` more fits, given what was spent when (ascending); None: it fits now.

        An amount over the whole budget never fits: the answer is the window."""
        recent = [(t, n) for t, n in spent if t > now - self.seconds]
        total = sum(n for _, n in recent)
        if total + amount <= self.limit:
            return None
        if amount > self.limit:
            return self.seconds
        for t, n in recent:  # the oldest leave first
            total -= n
            if total + amount <= self.limit:
                return max(0.0, t + self.seconds - now)
        return self.seconds


def key(kind: str, value: str) -> str:
    """The stored form of a key: its kind and a digest of its value."""
    return f"{kind}:{hashlib.sha256(value.encode()).hexdigest()[:40]}"


def hits(stored_key: str, since: float) -> list[float]:
    """The times of ``stored_key``'s hits after ``since``, ascending."""
    rows = Hit.objects.filter(key=stored_key, at__gt=since).order_by("at").values_list("at", flat=True)
    return list(rows)


def take(rules: Sequence[tuple[str, Window]], clock: Clock = time.time) -> float | None:
    """One hit on every key if every window allows it (None), else the longest wait, hitting none."""
    now = clock()
    with transaction.atomic():
        wait = _longest_wait(rules, now)
        if wait is None:
            Hit.objects.bulk_create([Hit(key=stored_key, at=now) for stored_key, _ in rules])
    return wait


def refused(rules: Sequence[tuple[str, Window]], clock: Clock = time.time) -> float | None:
    """The longest wait any window asks for now, without a hit; None if all allow one more."""
    return _longest_wait(rules, clock())


def _longest_wait(rules: Sequence[tuple[str, Window]], now: float) -> float | None:
    waits = [
        wait
        for stored_key, window in rules
        if (wait := window.retry_after(hits(stored_key, now - window.seconds), now)) is not None
    ]
    return max(waits) if waits else None


def spend(stored_key: str, budget: Budget, amount: int, clock: Clock = time.time) -> float | None:
    """Spend ``amount`` of ``stored_key``'s budget if it fits (None), else the wait, spending nothing."""
    now = clock()
    with transaction.atomic():
        rows = Hit.objects.filter(key=stored_key, at__gt=now - budget.seconds).order_by("at")
        wait = budget.retry_after(list(rows.values_list("at", "amount")), amount, now)
        if wait is None:
            Hit.objects.create(key=stored_key, at=now, amount=amount)
    return wait


def record(keys: Sequence[str], clock: Clock = time.time) -> None:
    """A hit on each key, allowed or not (a failed login counts whatever the window says)."""
    now = clock()
    Hit.objects.bulk_create([Hit(key=stored_key, at=now) for stored_key in keys])


def forget_before(cutoff: float) -> int:
    """Delete hits older than ``cutoff`` (epoch seconds): no window looks that far back; how many went."""
    deleted, _ = Hit.objects.filter(at__lt=cutoff).delete()
    return deleted
