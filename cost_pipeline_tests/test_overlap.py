"""Days side by side (``lib/overlap``): results in order, two small days at once, a large day alone, and
an error raised at its day's turn with nothing still running once the block is left."""

import threading
import time

import pytest

from cost_pipeline.lib.overlap import in_order

WAIT = 10  # seconds a day waits for its neighbour before concluding it runs alone


class Days:
    """Work that records which days ran at the same time."""

    def __init__(self, fail: int | None = None):
        self.lock = threading.Lock()
        self.running: set[int] = set()
        self.together: list[set[int]] = []
        self.started: list[int] = []
        self.finished: list[int] = []
        self.fail = fail

    def __call__(self, day: int) -> int:
        with self.lock:
            self.running.add(day)
            self.started.append(day)
            self.together.append(set(self.running))
        time.sleep(0.05)
        with self.lock:
            self.together.append(set(self.running))
            self.running.discard(day)
            self.finished.append(day)
        if day == self.fail:
            raise ValueError(f"day {day} does not read")
        return day * 10


def test_small_days_run_two_at_a_time_and_come_back_in_order():
    days = Days()
    neighbour_started = threading.Event()

    def work(day: int) -> int:
        if day == 1:
            neighbour_started.set()
        if day == 0:  # returns only once day 1 runs beside it (or after WAIT seconds alone)
            assert neighbour_started.wait(WAIT), "day 1 did not start while day 0 ran"
        return days(day)

    with in_order(work, list(range(6)), [10] * 6, budget=20) as results:
        assert list(results) == [(d, d * 10) for d in range(6)]
    assert max(map(len, days.together)) == 2  # never three
    assert {0, 1} in days.together


def test_days_too_large_together_run_alone():
    days = Days()
    with in_order(days, list(range(4)), [10, 15, 10, 5], budget=20) as results:
        assert [r for _, r in results] == [0, 10, 20, 30]
    assert {2, 3} in days.together  # 10 + 5 fit
    assert all(len(s) == 1 or s == {2, 3} for s in days.together)  # 10 + 15 and 15 + 10 do not


def test_an_error_is_raised_at_its_days_turn_and_nothing_runs_after_the_block():
    days = Days(fail=2)
    used = []
    with pytest.raises(ValueError, match="day 2 does not read"):
        with in_order(days, list(range(6)), [1] * 6, budget=20) as results:
            for day, result in results:
                used.append(result)
    assert used == [0, 10]  # the days before the bad one were used, in order
    assert sorted(days.finished) == sorted(days.started)  # the day started beside it finished before the block was left
    assert set(days.started) <= {0, 1, 2, 3}  # at most the next day had started; none after it


def test_leaving_the_block_early_cancels_what_has_not_started():
    days = Days()
    with in_order(days, list(range(6)), [1] * 6, budget=20) as results:
        for day, _ in results:
            if day == 1:
                break
    assert sorted(days.finished) == sorted(days.started) and set(days.started) <= {0, 1, 2}
