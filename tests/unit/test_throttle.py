"""Sliding windows of hits in the database: the rule alone, then with the store and an injected clock."""

from __future__ import annotations

import pytest

from transcription import throttle
from transcription.models import Hit
from transcription.throttle import Window


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_window_allows_up_to_its_limit():
    window = Window(3, 60)
    assert window.retry_after([], 100) is None
    assert window.retry_after([90, 95], 100) is None


def test_window_at_its_limit_waits_for_the_oldest_counted_hit():
    assert Window(3, 60).retry_after([50, 90, 95], 100) == pytest.approx(10)


def test_window_forgets_hits_older_than_itself():
    assert Window(2, 60).retry_after([10, 20, 95], 100) is None


@pytest.mark.django_db
def test_throttle_take_counts_until_refused_then_counts_nothing():
    clock, rule = Clock(), [("k", Window(2, 60))]
    assert throttle.take(rule, clock) is None
    clock.now += 1
    assert throttle.take(rule, clock) is None
    clock.now += 1
    assert throttle.take(rule, clock) == pytest.approx(58)
    assert Hit.objects.count() == 2  # a refused take is not a hit
    clock.now += 58
    assert throttle.take(rule, clock) is None


@pytest.mark.django_db
def test_throttle_take_refuses_all_keys_when_one_is_full():
    clock = Clock()
    throttle.record(["full"], clock)
    assert throttle.take([("fresh", Window(5, 60)), ("full", Window(1, 60))], clock) == pytest.approx(60)
    assert throttle.hits("fresh", 0) == []


@pytest.mark.django_db
def test_throttle_refused_reads_without_counting():
    clock = Clock()
    rule = [("k", Window(1, 60))]
    assert throttle.refused(rule, clock) is None
    assert throttle.refused(rule, clock) is None
    throttle.record(["k"], clock)
    assert throttle.refused(rule, clock) == pytest.approx(60)


@pytest.mark.django_db
def test_throttle_forget_before_deletes_only_older_hits():
    clock = Clock(100)
    throttle.record(["a"], clock)
    clock.now = 200
    throttle.record(["a"], clock)
    assert throttle.forget_before(150) == 1
    assert throttle.hits("a", 0) == [200]


def test_throttle_key_is_bounded_and_hides_its_value():
    stored = throttle.key("login-user", "x" * 10_000)
    assert len(stored) <= 64
    assert "x" not in stored.split(":")[1]
    assert throttle.key("a", "v") != throttle.key("b", "v")


def test_budget_fits_until_its_total():
    budget = throttle.Budget(100, 60)
    assert budget.retry_after([], 100, 1000) is None
    assert budget.retry_after([(990, 60)], 40, 1000) is None
    assert budget.retry_after([(990, 60)], 41, 1000) == pytest.approx(50)


def test_budget_waits_until_enough_has_aged_out():
    budget = throttle.Budget(100, 60)
    spent = [(950, 30), (960, 30), (990, 30)]
    assert budget.retry_after(spent, 20, 1000) == pytest.approx(10)  # the first 30 leave at 1010
    assert budget.retry_after(spent, 50, 1000) == pytest.approx(20)  # the first two leave at 1020


def test_budget_forgets_what_is_older_than_its_window():
    assert throttle.Budget(100, 60).retry_after([(900, 100)], 100, 1000) is None


def test_budget_never_fits_more_than_itself():
    assert throttle.Budget(100, 60).retry_after([], 101, 1000) == 60


@pytest.mark.django_db
def test_throttle_spend_records_only_what_fits():
    clock, budget = Clock(), throttle.Budget(100, 3600)
    assert throttle.spend("bytes", budget, 70, clock) is None
    clock.now += 10
    assert throttle.spend("bytes", budget, 40, clock) == pytest.approx(3590)
    assert throttle.spend("bytes", budget, 30, clock) is None
    assert sorted(Hit.objects.values_list("amount", flat=True)) == [30, 70]
