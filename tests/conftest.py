"""Shared fixtures: the folder of real data kept next to the repository (not part of it); one torch thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two shared cores: torch's intra-op threads only contend with each other on the tiny models of the tests. The
# environment variable carries the same limit into every process a test starts (torchrun workers, the CLI).
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``$FLEXREC_SHARED`` or ``<repo>/../shared``; skips the test when MovieTweetings 100K is not there."""
    folder = Path(os.environ.get("FLEXREC_SHARED", ROOT.parent / "shared"))
    if not (folder / "data" / "movietweetings-100k" / "ratings.dat").is_file():
        pytest.skip(f"no shared data at {folder / 'data' / 'movietweetings-100k'} (set FLEXREC_SHARED to its parent folder)")
    return folder
