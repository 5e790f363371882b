"""No lost work: output paths checked before training, training checkpoints, and a Ctrl-C that stops at a safe point.

A *training checkpoint* is an agent checkpoint (:mod:`agents.checkpoints`) that also holds the trainer's state:
optimisers, critic with its buffer, reference policy, every random state and the progress. It is written every
:attr:`Checkpointing.every` environment steps and when training is interrupted, to :attr:`Checkpointing.path`
(``runs/x/flexrec.ckpt`` trains with ``runs/x/flexrec.resume.ckpt`` beside it), at the end of an iteration: a run
resumed from it (``flexrec-agent train --resume PATH``, :meth:`agents.base.TrainableAgent.resume`) reaches the same
weights as one that was never interrupted.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from scenarios.settings import check_value

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpointing:
    """Where a run's training checkpoints go and how often."""

    path: Path
    """The training checkpoint, rewritten in place (atomically) each time."""
    every: int = 0
    """Environment steps between training checkpoints (0: only when training is interrupted)."""
    options: dict[str, Any] = field(default_factory=dict)
    """How the run was started beyond the agent's own settings (output paths, evaluation episodes, threads): kept in
    the training checkpoint, so ``--resume`` needs nothing else."""

    def __post_init__(self) -> None:
        check_value("every", self.every, int, ">= 0")


def resume_path(out: Path) -> Path:
    """The training checkpoint beside the final checkpoint ``out``: ``runs/x/flexrec.ckpt`` -> ``runs/x/flexrec.resume.ckpt``."""
    return out.with_name(f"{out.stem}.resume{out.suffix or '.ckpt'}")


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped at Ctrl-C, at the end of an iteration, after writing its training checkpoint ``path``."""

    def __init__(self, steps: int, path: Path | None) -> None:
        super().__init__(f"training interrupted after {steps} steps" + (f"; checkpoint written to {path}" if path else ""))
        self.steps, self.path = steps, path


class StopRequest:
    """A Ctrl-C that stops training at the end of its iteration.

    Within ``with StopRequest() as stop:`` the first SIGINT only sets ``stop.requested``: the training loop stops at
    the end of its iteration, where its state can be saved whole. A second SIGINT raises ``KeyboardInterrupt`` at
    once. Outside the main thread (where Python delivers no signal) nothing is installed.
    """

    def __init__(self) -> None:
        self.requested = False
        self.previous: signal.Handlers | object = None
        self.installed = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("interrupted: stopping at the end of this iteration to save a checkpoint (Ctrl-C again: stop now)")

    def __enter__(self) -> StopRequest:
        # Not outside the main thread (no signal arrives there), and not where Ctrl-C is ignored (a background job).
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self.previous = signal.signal(signal.SIGINT, self.handle)
            self.installed = True
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self.installed:  # a handler set from C reads as None: put Python's default back then
            signal.signal(signal.SIGINT, signal.default_int_handler if self.previous is None else self.previous)  # type: ignore[arg-type]


def check_output_path(path: Path, what: str, folder: bool = False) -> None:
    """A ``ValueError`` naming ``path`` unless training can write it there.

    ``path`` must be a file path that is not a folder (``folder=False``) or a folder that is not a file, and its
    nearest existing ancestor a writable folder.
    """
    path = Path(path)
    if path.exists() and folder != path.is_dir():
        kind = "a folder" if path.is_dir() else "a file"
        raise ValueError(f"{what} {path} is {kind}; allowed: {'a folder' if folder else 'a file path'} (choose another path)")
    ancestor = path if folder and path.exists() else path.parent  # an existing file is replaced: its folder must be writable
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{what} {path} cannot be created: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path} cannot be written: {ancestor} is not writable")
