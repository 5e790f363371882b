"""Checkpoint files and folders: data, not code; atomic writes that never lose the previous copy; clear refusals."""

from __future__ import annotations

import json
import os
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from agents.checkpoints import FORMAT, atomic_write, load_checkpoint, read_kind, save_checkpoint, write_folder
from agents.cli import main
from agents.registry import load_agent


def fill(text: str):
    def write(folder: Path) -> None:
        (folder / "a.txt").write_text(text)

    return write


def test_a_folder_is_written_whole_and_replaces_the_old_one(tmp_path):
    target = tmp_path / "adapter"
    assert write_folder(target, fill("one")) and (target / "a.txt").read_text() == "one"
    assert write_folder(target, fill("two")) and (target / "a.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"], "no temporary or old folder left"
    assert not write_folder(target, fill("three"), replace=False) and (target / "a.txt").read_text() == "two"


def test_a_failed_write_keeps_the_previous_folder(tmp_path):
    target = tmp_path / "adapter"
    write_folder(target, fill("one"))

    def broken(folder: Path) -> None:
        (folder / "a.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder(target, broken)
    assert (target / "a.txt").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_files_are_flushed_before_the_rename_and_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    path = tmp_path / "x.ckpt"
    save_checkpoint(path, "flexrec", {"value": 1})
    assert Path(synced[0]).name.startswith(".x.ckpt.") and Path(synced[1]) == tmp_path  # the file, then its folder

    def broken(temporary: Path) -> None:
        temporary.write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, broken)
    assert load_checkpoint(path, "flexrec")["value"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["x.ckpt"], "no temporary file left"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_written_file_has_the_mode_open_would_give_it(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "x.ckpt", lambda temporary: temporary.write_bytes(b"data"))
    finally:
        os.umask(previous)
    assert (tmp_path / "x.ckpt").stat().st_mode & 0o777 == 0o666 & ~umask  # mkstemp alone gives 0o600


def test_every_kind_of_state_round_trips_exactly(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    rng = np.random.default_rng(5)
    payload = {
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),  # integer keys, a tuple, 0-d tensors
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": rng.bit_generator.state,  # 128-bit integers
        "python_rng": random.getstate(),
        "array": np.arange(6.0).reshape(2, 3),
        "history": [{"steps": 1.0, "loss": float("nan")}],
        "empty": torch.zeros(0, 4),
        "flags": torch.tensor([True, False]),
        "half": torch.ones(2, dtype=torch.bfloat16),
        "none": None,
    }
    path = tmp_path / "x.ckpt"
    save_checkpoint(path, "flexrec", payload)
    assert read_kind(path) == "flexrec"
    back = load_checkpoint(path, "flexrec")
    assert all(torch.equal(back["state_dict"][k], v) for k, v in model.state_dict().items())
    again = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    again.load_state_dict(back["optimizer"])
    assert torch.equal(again.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert torch.equal(back["torch_rng"], payload["torch_rng"])
    generator = np.random.default_rng()
    generator.bit_generator.state = back["numpy_rng"]
    assert generator.random() == rng.random()
    expected = random.random()
    state = back["python_rng"]  # tuples come back as lists
    random.setstate((state[0], tuple(state[1]), state[2]))
    assert random.random() == expected
    np.testing.assert_array_equal(back["array"], payload["array"])
    assert np.isnan(back["history"][0]["loss"]) and back["none"] is None
    assert back["empty"].shape == (0, 4) and back["flags"].tolist() == [True, False] and back["half"].dtype == torch.bfloat16
    with pytest.raises(TypeError, match=r"JSON data; settings is a dtype"):
        save_checkpoint(tmp_path / "y.ckpt", "flexrec", {"settings": torch.float32})


def test_the_file_is_a_plain_safetensors_file_with_json_metadata(tmp_path):
    from safetensors import safe_open

    path = tmp_path / "x.ckpt"
    save_checkpoint(path, "bpr", {"state_dict": {"w": torch.ones(2)}, "dims": [3, 4]})
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert list(f.keys()) == ["state_dict.w"]
    document = json.loads(meta["flexrec"])
    payload = {"state_dict": {"w": {"__tensor__": "state_dict.w"}}, "dims": [3, 4]}
    assert document == {"format": FORMAT, "kind": "bpr", "payload": payload}
    assert len(meta["sha256"]) == 64


class Marker:
    """Unpickling this creates the file ``path``: what a malicious checkpoint would do (with ``os.system``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_malicious_pickle_runs_nothing_and_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"format": "flexrec-checkpoint-v2", "kind": "flexrec", "settings": Marker(marker)}, evil)
    raw = tmp_path / "raw.ckpt"
    raw.write_bytes(pickle.dumps({"format": "flexrec-checkpoint-v2", "settings": Marker(marker)}))
    with pytest.raises(ValueError, match="raw.ckpt is not a readable FlexRec checkpoint"):
        load_agent(raw)
    assert_refused_running_nothing(evil, marker, "evil.ckpt is not a readable FlexRec checkpoint", "older FlexRec")


def assert_refused_running_nothing(path: Path, marker: Path, message: str, output: str) -> None:
    """``load_agent`` refuses ``path`` with ``message``, ``evaluate --checkpoint`` with ``output`` and no traceback,
    and nothing created ``marker`` (what the file's code would do)."""
    with pytest.raises(ValueError, match=message):
        load_agent(path)
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(path), "--episodes", "1"])
    assert result.exit_code == 2 and output in result.output and "Traceback" not in result.output, result.output
    assert not marker.exists(), "loading ran code from the file"


def test_an_old_stable_baselines3_archive_is_refused_unopened(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "ppo.ckpt"
    serialized = {":serialized:": __import__("base64").b64encode(pickle.dumps(Marker(marker))).decode()}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data", json.dumps({"policy_class": serialized}))
        archive.writestr("flexrec.json", json.dumps({"agent": "sb3", "config": {"algorithm": "ppo"}}))
    with pytest.raises(ValueError, match="stable-baselines3 checkpoint from an older FlexRec.*train it again"):
        load_agent(path)
    assert not marker.exists()


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    path = tmp_path / "good.ckpt"
    save_checkpoint(path, "flexrec", {"settings": {"dim": 8}, "state_dict": {"w": torch.arange(12.0).reshape(3, 4)}})
    return path


def test_truncated_files_are_refused(checkpoint):
    data = checkpoint.read_bytes()
    for size in sorted({0, 4, 8, 20, len(data) // 2, len(data) - 48, len(data) - 1}):
        checkpoint.write_bytes(data[:size])
        with pytest.raises(ValueError, match=r"good.ckpt is not a readable FlexRec checkpoint: .*(truncated|corrupted)"):
            load_checkpoint(checkpoint, "flexrec")


def test_every_flipped_bit_is_caught(checkpoint):
    data = checkpoint.read_bytes()
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            flipped = bytearray(data)
            flipped[i] ^= bit
            checkpoint.write_bytes(bytes(flipped))
            with pytest.raises(ValueError, match="good.ckpt"):
                load_checkpoint(checkpoint, "flexrec")


def test_foreign_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    text, empty, other, zipped = (tmp_path / name for name in ("text.ckpt", "empty.ckpt", "other.ckpt", "zip.ckpt"))
    text.write_text("a plain text file, long enough to hold a header\n" * 3)
    empty.write_bytes(b"")
    save_file({"w": torch.ones(2)}, str(other), metadata={"format": "pt"})
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("notes.txt", "hello")
    reasons = {text: "truncated or another format", empty: "0 bytes", other: "another program's file", zipped: "zip archive"}
    for path, reason in reasons.items():
        with pytest.raises(ValueError, match=f"{path.name} is not a readable FlexRec checkpoint: .*{reason}"):
            load_agent(path)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_agent(tmp_path / "missing.ckpt")


def test_a_header_without_its_payload_is_refused(tmp_path, checkpoint):
    data = checkpoint.read_bytes()
    size = int.from_bytes(data[:8], "little")
    checkpoint.write_bytes(data[: 8 + size])  # the header alone: the tensors' bytes are missing
    with pytest.raises(ValueError, match="tensors are truncated or corrupted"):
        load_checkpoint(checkpoint, "flexrec")
    bare = tmp_path / "bare.ckpt"
    save_checkpoint(bare, "flexrec", {})  # a well-formed file without what the agent needs
    with pytest.raises(ValueError, match="bare.ckpt lacks 'env_kwargs'"):
        load_agent(bare)
    save_checkpoint(bare, "flexrec", {"value": 3})
    with pytest.raises(ValueError, match="holds a 'flexrec' checkpoint, not a 'bpr' one"):
        load_checkpoint(bare, "bpr")


@pytest.mark.parametrize("kind", ["flexrec", "flexrec-llm", "ppo", "maskable-ppo"])
def test_a_checkpoint_that_names_code_to_call_is_refused_before_anything_is_built(tmp_path, kind):
    """A well-formed file (its checksum right) may not name a 'module:Factory' scenario: loading would call it."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    env_kwargs = {"scenario": "os:system", "scenario_kwargs": {"command": f"touch {marker}"}, "need": ["interest"]}
    save_checkpoint(path, kind, {"settings": {}, "config": {"algorithm": kind}, "env_kwargs": env_kwargs})
    message = r"names the scenario 'os:system': a saved file may name only a registered"
    assert_refused_running_nothing(path, marker, message, "only a registered scenario")
