"""Single-file torch checkpoints, written atomically and read back with clear errors; atomic file and folder writes.

A checkpoint is ``torch.save({"format": FORMAT, "kind": <agent name>, **payload})``: written to a temporary file in
the target's folder and moved into place with ``os.replace``, so an interrupted save never leaves a half-written
checkpoint behind.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

FORMAT = "flexrec-checkpoint-v2"
#: Formats this version refuses, with the reason.
RETIRED = {"flexrec-checkpoint-v1": "it predates the categorical critic and the policy's prior (issue 11); train again"}


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """``write(temporary)`` fills a temporary file beside ``path``, which then replaces ``path`` in one rename.

    An error in ``write`` (a failed check included) leaves ``path`` as it was and no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def save_checkpoint(path: str | Path, kind: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` as a checkpoint of agent ``kind`` to ``path``, atomically."""
    atomic_write(path, lambda temporary: torch.save({"format": FORMAT, "kind": kind, **payload}, temporary))


def write_folder(folder: str | Path, write: Callable[[Path], None], replace: bool = True) -> bool:
    """``write(temporary)`` fills a temporary folder beside ``folder``, which is then moved into place.

    An existing ``folder`` is replaced (``replace``) or kept (returns False: another writer finished first). Whatever
    happens, ``folder`` is never half-written and never lost: the old one is moved aside, and moved back if the new
    one cannot take its place; it is deleted only once the new one is in place.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new.", dir=folder.parent))
    try:
        temporary.chmod(0o755)  # mkdtemp makes it private
        write(temporary)
        if folder.exists() and not replace:
            return False
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            os.replace(folder, old)  # an empty folder is replaced by a rename
        try:
            os.replace(temporary, folder)
        except BaseException:
            if old is not None:
                os.replace(old, folder)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return True
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, ValueError, AttributeError) as error:
        raise ValueError(f"{path} is not a readable FlexRec checkpoint (truncated or another format): {error}") from None
    if isinstance(data, dict) and data.get("format") in RETIRED:
        raise ValueError(f"{path} has the retired checkpoint format {data['format']!r}: {RETIRED[data['format']]}")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a FlexRec checkpoint (expected format {FORMAT!r})")
    return data


def read_kind(path: str | Path) -> str:
    """The agent name a checkpoint was written by."""
    return str(_read(Path(path))["kind"])


def load_checkpoint(path: str | Path, kind: str) -> dict[str, Any]:
    """The payload of a checkpoint of agent ``kind``; a ``ValueError`` naming the file otherwise."""
    data = _read(Path(path))
    if data["kind"] != kind:
        raise ValueError(f"{path} holds a {data['kind']!r} checkpoint, not a {kind!r} one")
    return data
