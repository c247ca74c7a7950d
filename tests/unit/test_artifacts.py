from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmforge.artifacts import RunDir, read_manifest, sha256_file
from llmforge.errors import LlmforgeError


def test_finished_run_dir_explains_itself(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with RunDir(out, kind="eval", command="eval", config={"a": 1}, dataset_fingerprint="fp") as run:
        run.file("sub/data.txt").write_text("hello")
        run.finish({"perplexity": 3.0})
    manifest = read_manifest(out)
    assert manifest["kind"] == "eval" and manifest["dataset_fingerprint"] == "fp"
    assert manifest["versions"]["torch"]
    assert set(manifest["files"]) == {"sub/data.txt", "metrics.json", "config.yaml"}
    for name, digest in manifest["files"].items():
        assert sha256_file(out / name) == digest
    assert json.loads((out / "metrics.json").read_text()) == {"perplexity": 3.0}
    assert not out.with_name("run.partial").exists()


def test_a_failed_stage_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with RunDir(out, kind="eval", command="eval", config={}) as run:
            run.file("half.txt").write_text("partial")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == [], "neither a finished-looking dir nor an empty DIR.partial/"
    with pytest.raises(LlmforgeError, match="does not exist"):
        read_manifest(out)


def test_a_failed_run_keeps_its_checkpoints_to_resume_from(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with RunDir(out, kind="model", command="train", config={}, resumable="checkpoints") as run:
            run.file("checkpoints/checkpoint-2/weights").write_text("w")
            raise RuntimeError("killed")
    assert not out.exists()
    assert (tmp_path / "run.partial" / "checkpoints" / "checkpoint-2" / "weights").exists()
    with pytest.raises(LlmforgeError, match="did not finish"):
        read_manifest(out)


def test_a_run_that_failed_before_any_checkpoint_is_removed(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with RunDir(tmp_path / "run", kind="model", command="train", config={}, resumable="checkpoints") as run:
            run.file("checkpoints").mkdir()
            raise RuntimeError("out of memory")
    assert list(tmp_path.iterdir()) == []


def test_rerun_replaces_previous_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    for value in (1, 2):
        with RunDir(out, kind="eval", command="eval", config={}) as run:
            run.finish({"v": value})
    assert json.loads((out / "metrics.json").read_text()) == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_parent_reference_pins_manifest_hash(tmp_path: Path) -> None:
    with RunDir(tmp_path / "a", kind="prepared-dataset", command="prepare", config={}) as run:
        run.finish({})
    with RunDir(tmp_path / "b", kind="eval", command="eval", config={}, parents=[tmp_path / "a"]) as run:
        run.finish({})
    parent = read_manifest(tmp_path / "b")["parents"][0]
    assert parent["kind"] == "prepared-dataset"
    assert parent["manifest_sha256"] == sha256_file(tmp_path / "a" / "manifest.json")
