"""Independent computations at once (kdiff_cli.threads): thread sharing, order, errors stop the others."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from kdiff_cli.threads import Stopped, concurrently, split_threads


def test_split_threads_shares_and_restores_the_cpu_threads():
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        with split_threads(torch.device("cpu")) as share:
            assert share == 2 == torch.get_num_threads()
            torch.set_num_threads(1)  # code inside (alternating's one-thread pin) may change it
        assert torch.get_num_threads() == 4
        torch.set_num_threads(1)
        with split_threads(torch.device("cpu")) as share:
            assert share == 1 == torch.get_num_threads()
        with split_threads(torch.device("meta")) as share:  # other devices: untouched
            assert share == torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(n)


def test_concurrently_returns_in_order_and_runs_the_first_task_on_the_caller():
    main = threading.current_thread()
    seen = []

    def task(value):
        def run(check):
            check()
            seen.append(threading.current_thread() is main)
            return value

        return run

    assert concurrently(torch.device("cpu"), task("a"), task("b"), task("c")) == ["a", "b", "c"]
    assert sorted(seen) == [False, False, True]
    assert concurrently(torch.device("cpu"), task(1)) == [1]


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_an_error_in_one_task_stops_the_others_at_their_next_check(error):
    rounds = []

    def fails(check):
        time.sleep(0.05)
        raise error("bad input")

    def long(check):
        for i in range(200):
            check()
            rounds.append(i)
            time.sleep(0.01)
        return "finished"

    n = torch.get_num_threads()
    t0 = time.perf_counter()
    with pytest.raises(error):
        concurrently(torch.device("cpu"), fails, long)
    assert time.perf_counter() - t0 < 1.0 and len(rounds) < 50  # not the 2 s the long task would take
    assert torch.get_num_threads() == n
    rounds.clear()
    with pytest.raises(error, match="bad input"):  # a worker's failure stops the caller's task too
        concurrently(torch.device("cpu"), long, fails)
    assert len(rounds) < 50

    def stopped(check):
        raise Stopped

    with pytest.raises(Stopped):
        concurrently(torch.device("cpu"), stopped, long)


def test_checked_reports_after_the_check_and_stops_before_reporting():
    from kdiff_cli.threads import checked

    seen = []
    checked(lambda *a: seen.append(a), lambda: None)("sampling", 1, 25, {})
    checked(None, lambda: None)("sampling", 2, 25, {})  # no callback: nothing to report, no error

    def stop():
        raise Stopped

    with pytest.raises(Stopped):
        checked(lambda *a: seen.append(a), stop)("sampling", 3, 25, {})
    assert seen == [("sampling", 1, 25, {})]


def test_cpu_threads_pins_and_restores():
    from kdiff_cli.threads import cpu_threads

    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with cpu_threads(torch.device("cpu"), 1) as count:
            assert count == 1 == torch.get_num_threads()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(n)
