"""Checkpoints as data: one safetensors file of tensors plus JSON metadata, checksummed; atomic file and folder writes.

The format (``flexrec-checkpoint-v3``) is a plain `safetensors <https://huggingface.co/docs/safetensors>`_ file:

* its tensors hold every tensor of the payload (state dicts, optimiser states, random states), each named by its
  dotted path in the payload (``policy.state_dict.encoder.weight``, ``trainer.optimizer.state.3.exp_avg``);
* its string metadata holds two entries: ``flexrec``, the JSON document ``{"format", "kind", "payload"}`` in which
  each tensor stands as ``{"__tensor__": NAME}`` (a numpy array as ``{"__ndarray__": NAME}``, a dict whose keys are
  not strings as ``{"__items__": [[key, value], ...]}``), and ``sha256``, the SHA-256 of that JSON text followed by
  every tensor's name, dtype, shape and bytes in name order.

Reading parses the JSON header itself, lets safetensors read the tensors, recomputes the checksum and only then
rebuilds the payload: no byte of the file is ever executed (no pickle), and a truncated, corrupted or foreign file
(older FlexRec checkpoints, which were pickles, included) is refused with a ``ValueError`` naming the file and what
is wrong. Tuples come back as lists.

Writes go to a temporary file beside the target, are flushed to disk (``fsync``) and moved into place with one
``os.replace``: an interrupted save leaves the previous file intact and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "flexrec-checkpoint-v3"
#: The first bytes of a zip archive: ``torch.save`` files (FlexRec checkpoints before v3) and stable-baselines3 files.
ZIP_MAGIC = b"PK\x03\x04"
#: The largest JSON header read (safetensors' own limit).
MAX_HEADER = 100 * 2**20


# --------------------------------------------------------------------------------------------------------------------
# Atomic writes.


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file or a folder) to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """``write(temporary)`` fills a temporary file beside ``path``, which then replaces ``path`` in one rename.

    The file is flushed to disk before the rename and its folder after it. An error in ``write`` (a failed check or
    an interruption included) leaves ``path`` as it was and no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        write(temporary)
        temporary.chmod(0o666 & ~_umask())  # mkstemp makes it private: the mode open() would have given
        _fsync(temporary)
        os.replace(temporary, path)
        _fsync(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def _umask() -> int:
    """The process's file-mode creation mask (read by setting it, then put back: there is no other way to read it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_folder(folder: str | Path, write: Callable[[Path], None], replace: bool = True) -> bool:
    """``write(temporary)`` fills a temporary folder beside ``folder``, which is then moved into place.

    An existing ``folder`` is replaced (``replace``) or kept (returns False: another writer finished first). Whatever
    happens, ``folder`` is never half-written and never lost: the new files are flushed to disk before the rename, the
    old folder is moved aside, and moved back if the new one cannot take its place; it is deleted only once the new
    one is in place.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new.", dir=folder.parent))
    try:
        temporary.chmod(0o755)  # mkdtemp makes it private
        write(temporary)
        for child in sorted(temporary.rglob("*"), reverse=True):  # files before their folders
            _fsync(child)
        _fsync(temporary)
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
        _fsync(folder.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return True
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------------
# Payload <-> JSON document plus named tensors.


def _encode(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON data, its tensors moved into ``tensors`` under dotted names (``name`` is its own)."""

    def tensor_ref(tensor: torch.Tensor, tag: str) -> dict[str, str]:
        key, n = name or "tensor", 1
        while key in tensors:
            key, n = f"{name}#{n}", n + 1
        tensors[key] = tensor.detach().to("cpu").contiguous().clone()  # a storage of its own: safetensors shares none
        return {tag: key}

    def child(key: object) -> str:
        return f"{name}.{key}" if name else str(key)

    if isinstance(value, torch.Tensor):
        return tensor_ref(value, "__tensor__")
    if isinstance(value, np.ndarray):
        return tensor_ref(torch.from_numpy(np.ascontiguousarray(value)), "__ndarray__")
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_encode(item, child(i), tensors) for i, item in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(key, str) and not key.startswith("__") for key in value):
            return {key: _encode(item, child(key), tensors) for key, item in value.items()}
        return {"__items__": [[_encode(k, child(k), tensors), _encode(v, child(k), tensors)] for k, v in value.items()]}
    raise TypeError(f"a checkpoint holds tensors, arrays and JSON data; {name or 'the payload'} is a {type(value).__name__}")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The payload that :func:`_encode` turned into ``value`` (tensors already checked against the checksum)."""
    if isinstance(value, list):
        return [_decode(item, tensors) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"__tensor__"}:
        return tensors[value["__tensor__"]]
    if set(value) == {"__ndarray__"}:
        return tensors[value["__ndarray__"]].numpy()
    if set(value) == {"__items__"}:
        return {_hashable(_decode(k, tensors)): _decode(v, tensors) for k, v in value["__items__"]}
    return {key: _decode(item, tensors) for key, item in value.items()}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def _digest(document: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the JSON ``document`` and every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256(document.encode())
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_bytes(kind: str, payload: dict[str, Any]) -> bytes:
    """The checkpoint file of agent ``kind`` holding ``payload`` (see the module docstring)."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    document = json.dumps({"format": FORMAT, "kind": kind, "payload": _encode(payload, "", tensors)})
    return save(tensors, metadata={"flexrec": document, "sha256": _digest(document, tensors)})


def save_checkpoint(path: str | Path, kind: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` (tensors, numpy arrays and JSON data) as a checkpoint of agent ``kind`` to ``path``, atomically."""
    data = checkpoint_bytes(kind, payload)
    atomic_write(path, lambda temporary: temporary.write_bytes(data))


# --------------------------------------------------------------------------------------------------------------------
# Reading.


class CheckpointData(dict[str, Any]):
    """A checkpoint's payload: a missing entry is a ``ValueError`` naming the file, not a ``KeyError``."""

    path: Path

    def __missing__(self, key: str) -> Any:
        raise ValueError(f"{self.path} lacks {key!r}: it was not written by this agent's save(); train it again")


def _refuse(path: Path, reason: str) -> ValueError:
    return ValueError(f"{path} is not a readable FlexRec checkpoint: {reason}")


def _older_format(path: Path) -> str:
    """Why a zip archive is not a checkpoint of this version (its names are read; nothing in it is unpickled)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return "a damaged zip archive"
    if "flexrec.json" in names:
        return "a stable-baselines3 checkpoint from an older FlexRec, whose loading unpickles code; train it again"
    if any(name.endswith("data.pkl") for name in names):
        return (
            "a torch.save (pickle) file, as older FlexRec versions wrote; this version never unpickles a checkpoint "
            "(unpickling can run code from the file): train it again"
        )
    return "a zip archive, not a safetensors file"


def _read(path: Path) -> dict[str, Any]:
    """The JSON document of checkpoint ``path`` with its payload rebuilt, after every check."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    data = path.read_bytes()
    if data[:4] == ZIP_MAGIC:
        raise _refuse(path, _older_format(path))
    if len(data) < 8:
        raise _refuse(path, f"it has {len(data)} bytes (truncated or another format)")
    size = int.from_bytes(data[:8], "little")
    if size > min(len(data) - 8, MAX_HEADER):
        raise _refuse(path, f"no safetensors header fits in its {len(data)} bytes (truncated or another format)")
    try:
        header = json.loads(data[8 : 8 + size])
        meta = header["__metadata__"]
        document, checksum = json.loads(meta["flexrec"]), meta["sha256"]
        fmt, kind = document["format"], document["kind"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, RecursionError):
        raise _refuse(path, "its header is not FlexRec metadata (another program's file, or corrupted)") from None
    if fmt != FORMAT:
        raise _refuse(path, f"it has the format {fmt!r}; this version reads {FORMAT!r} (is it from a newer FlexRec?)")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise _refuse(path, f"its tensors are truncated or corrupted ({error})") from None
    if _digest(meta["flexrec"], tensors) != checksum:
        raise _refuse(path, "its content does not match its checksum (the file is corrupted)")
    try:
        payload = _decode(document["payload"], tensors)
    except (KeyError, TypeError, ValueError) as error:  # only a file written to pass the checksum gets here
        raise _refuse(path, f"its payload names a tensor it lacks ({error})") from None
    if not isinstance(payload, dict) or not isinstance(kind, str):
        raise _refuse(path, "its payload is not a mapping")
    result = CheckpointData(payload)
    result.path = path
    return {"kind": kind, "payload": result}


def read_checkpoint(path: str | Path) -> tuple[str, CheckpointData]:
    """The agent name a checkpoint was written by, and its payload; a ``ValueError`` naming the file if it is not one."""
    content = _read(Path(path))
    return content["kind"], content["payload"]


def read_kind(path: str | Path) -> str:
    """The agent name a checkpoint was written by (the whole file is checked)."""
    return read_checkpoint(path)[0]


def load_checkpoint(path: str | Path, kind: str) -> CheckpointData:
    """The payload of a checkpoint of agent ``kind``; a ``ValueError`` naming the file otherwise."""
    found, payload = read_checkpoint(path)
    if found != kind:
        raise ValueError(f"{path} holds a {found!r} checkpoint, not a {kind!r} one")
    return payload


@contextlib.contextmanager
def restoring(path: str | Path, what: str) -> Iterator[None]:
    """Within this context a state that does not fit (``load_state_dict``'s errors) is a ``ValueError`` naming ``path``."""
    try:
        yield
    except (RuntimeError, KeyError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(f"{path}: its {what} does not fit ({str(error)[:300]})") from None


def restored_env_kwargs(env_kwargs: Any, path: str | Path) -> dict[str, Any]:
    """The environment arguments a saved file (checkpoint, log) names, checked so that using them calls no code it names.

    A registered scenario name (built in, or installed by the user as an entry point) is data; a
    ``"package.module:Factory"`` string would import that module and call the factory, so a file may not name one:
    give ``--scenario`` yourself to use such a scenario with a checkpoint.
    """
    if not isinstance(env_kwargs, dict):
        raise ValueError(f"{path}: its environment arguments are a {type(env_kwargs).__name__}, not a mapping")
    scenario = env_kwargs.get("scenario", "synthetic")
    if not isinstance(scenario, str) or ":" in scenario:
        raise ValueError(
            f"{path} names the scenario {scenario!r}: a saved file may name only a registered scenario (using a "
            "'package.module:Factory' would import and call it); pass --scenario (and --scenario-arg) yourself"
        )
    return dict(env_kwargs)
