"""Progress (:mod:`agents.progress`): a bar in a terminal, log lines every tenth or every 30 s otherwise."""

from __future__ import annotations

import io
import logging
import sys
import types

from agents.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "agents.progress"]


def test_log_lines_every_tenth_and_at_the_end(caplog):
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="agents.progress"):
        progress = Progress(100, "train x", unit="step", terminal=False, clock=clock)
        for _ in range(25):
            clock.now += 1.0  # 4 steps take 4 s: every tenth is past the 2 s gap
            progress.update(4)
        progress.set_postfix(loss="0.5")
        progress.close()
    found = lines(caplog)
    assert found[0] == "train x: 12/100 steps (12%), 3s elapsed, about 22s left"
    assert [line.split(" ")[2] for line in found] == [f"{n}/100" for n in (12, 20, 32, 40, 52, 60, 72, 80, 92, 100)]
    assert found[-1] == "train x: 100/100 steps (100%), 25s elapsed"


def test_slow_work_logs_every_30_seconds_and_fast_work_once(caplog):
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="agents.progress"):
        slow = Progress(1000, "slow", terminal=False, clock=clock)
        for _ in range(7):
            clock.now += 10.0
            slow.update(1)  # never a tenth: the 30 s rule logs
        found = lines(caplog)
        assert [line.split(" ")[1] for line in found] == ["3/1000", "6/1000"]
        caplog.clear()
        fast = Progress(50, "fast", terminal=False, clock=clock)
        for _ in range(50):
            fast.update(1)  # no time passes: only the closing line
        fast.close()
        fast.close()
    assert lines(caplog) == ["fast: 50/50 steps (100%), 0s elapsed"]


def test_a_terminal_gets_a_bar_and_no_log_lines(caplog):
    with caplog.at_level(logging.INFO, logger="agents.progress"):
        with Progress(10, "bar", terminal=True) as progress:
            progress.update(10)
            progress.set_postfix(list_reward="0.4")
            assert progress.bar is not None and progress.bar.n == 10 and progress.n == 10
        with Progress(10, "off", enabled=False, terminal=False) as silent:
            silent.update(10)
    assert lines(caplog) == []


def test_a_notebook_gets_a_bar_whatever_its_stream(monkeypatch, caplog):
    """In a notebook the library logs with no handler, so log lines would show nothing: a bar instead."""
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert Progress(10, "script").bar is None
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    with caplog.at_level(logging.INFO, logger="agents.progress"), Progress(10, "notebook") as progress:
        progress.update(10)
        assert progress.bar is not None and progress.bar.n == 10
    assert lines(caplog) == []
