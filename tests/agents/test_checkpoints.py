"""Checkpoint files and folders: atomic writes that never lose the previous copy, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.checkpoints import load_checkpoint, save_checkpoint, write_folder


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


def test_checkpoint_files_round_trip_and_refuse_the_wrong_kind(tmp_path):
    path = tmp_path / "x.ckpt"
    save_checkpoint(path, "flexrec", {"value": 3})
    assert load_checkpoint(path, "flexrec")["value"] == 3
    with pytest.raises(ValueError, match="holds a 'flexrec' checkpoint, not a 'bpr' one"):
        load_checkpoint(path, "bpr")
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable FlexRec checkpoint"):
        load_checkpoint(path, "flexrec")
