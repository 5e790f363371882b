"""Progress of training and evaluation, wherever the output goes.

In a terminal or a Jupyter notebook, :class:`Progress` is a tqdm bar; when the output is not a terminal (a log file,
CI) it writes a log line (``logging``, logger ``agents.progress``) every tenth of the work (but not
within 2 seconds of the last line) or every 30 seconds, whichever comes first, and one at the end. It takes the
calls of a tqdm bar that the loops use (``update``, ``set_postfix``, ``close``, ``n``), so a loop does not care
which it got. A log line reads::

    flexrec (flexrec): 15360/150000 steps (10%), 1m02s elapsed, about 9m04s left, list_reward=0.412
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

logger = logging.getLogger(__name__)


def _shows_a_bar() -> bool:
    """Whether standard error shows a tqdm bar: a terminal, or a notebook (where log lines need a handler to appear)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class Progress:
    """Progress over ``total`` units: a tqdm bar in a terminal, else periodic log lines (see the module docstring).

    ``enabled`` False shows nothing (the other processes of a data-parallel run); ``terminal`` None asks whether
    standard error is a terminal or the code runs in a notebook's kernel (a bar there: log lines would need a logging
    handler to appear). Log lines come at every ``log_fraction`` of ``total`` reached at least ``min_gap`` seconds
    (of ``clock``) after the last line, at least every ``log_every`` seconds while the work goes on, and at
    :meth:`close`.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "step",
        enabled: bool = True,
        terminal: bool | None = None,
        log_fraction: float = 0.1,
        log_every: float = 30.0,
        min_gap: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        terminal = _shows_a_bar() if terminal is None else terminal
        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, mininterval=1.0) if enabled and terminal else None
        self.logs = enabled and not terminal
        self.clock, self.started = clock, clock()
        self.step = max(1, math.ceil(total * log_fraction))
        self.log_every, self.min_gap = log_every, min_gap
        self.next_count, self.next_time, self.last_time = self.step, self.started + log_every, self.started
        self.postfix: dict[str, Any] = {}
        self.logged = 0

    def update(self, count: int = 1) -> None:
        """``count`` more units done."""
        self.n += count
        if self.bar is not None:
            self.bar.update(count)
        elif self.logs:
            now = self.clock()
            if (self.n >= self.next_count and now - self.last_time >= self.min_gap) or now >= self.next_time:
                self._log()

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        """Values shown beside the count (``list_reward=0.41``)."""
        self.postfix = values
        if self.bar is not None:
            self.bar.set_postfix(refresh=refresh, **values)

    def close(self) -> None:
        """End the bar; without a terminal, log the final count if the last line did not."""
        if self.bar is not None:
            self.bar.close()
        elif self.logs and self.n and self.logged != self.n:
            self._log()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _log(self) -> None:
        now = self.clock()
        elapsed = now - self.started
        line = f"{self.desc}: {self.n}/{self.total} {self.unit}s ({100 * self.n / max(self.total, 1):.0f}%), "
        line += f"{_duration(elapsed)} elapsed"
        if 0 < self.n < self.total and elapsed > 0:
            line += f", about {_duration(elapsed * (self.total - self.n) / self.n)} left"
        line += "".join(f", {key}={value}" for key, value in self.postfix.items())
        logger.info(line)
        self.logged = self.n
        self.next_count = (self.n // self.step + 1) * self.step
        self.next_time, self.last_time = now + self.log_every, now
