"""Atomic outputs: the real name holds the old or the new complete file, never a partial one."""
import os

import pytest

from src.model_utils.atomic import atomic_output, remove_leftovers, write_json


def test_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    write_json(str(path), {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_output(str(path)) as tmp:
            assert os.path.basename(tmp).startswith(".tmp-") and tmp.endswith(".json")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("{\"a\": ")
            raise RuntimeError("killed")
    assert path.read_text(encoding="utf-8") == '{\n  "a": 1\n}\n'
    assert os.listdir(tmp_path) == ["out.json"]


def test_remove_leftovers_deletes_only_temporary_files(tmp_path):
    for name in (".tmp-a.ckpt", ".tmp-a.tmp", ".tmp-b.png", "keep.tmp", "tmp-c.ckpt", "x.ckpt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".tmp-dir").mkdir()
    remove_leftovers(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [".tmp-dir", "keep.tmp", "tmp-c.ckpt", "x.ckpt"]
