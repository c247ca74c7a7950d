from __future__ import annotations

import json
from pathlib import Path

from llmforge.data.sources import stdlib_text_records
from llmforge.demo import demo_config, write_demo_dataset


def test_demo_dataset_is_real_and_held_out_by_package(tmp_path: Path) -> None:
    path = tmp_path / "functions.jsonl"
    count = write_demo_dataset(path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert count == len(records) > 1000
    assert {r["split"] for r in records} == {"train", "validation", "test"}
    packages = {split: {r["module"].split(".")[0] for r in records if r["split"] == split}
                for split in ("train", "validation", "test")}
    assert not packages["test"] & packages["train"] and not packages["validation"] & packages["train"]
    # the base model was pretrained on train packages only: no held-out package leaks into it
    pretrained = {r["module"].split(".")[0] for r in stdlib_text_records("train")}
    assert not pretrained & (packages["test"] | packages["validation"])
    assert all(r["output"].lstrip().startswith(("def ", "async def ", "@")) for r in records)


def test_demo_config_scores_held_out_packages() -> None:
    cfg = demo_config()
    assert cfg.data.split.column == "split" and cfg.eval.split == "test"
    assert cfg.model.name_or_path == "demo" and cfg.train.method == "lora"


def test_demo_real_yaml_is_the_real_demo_config() -> None:
    from llmforge.demo import real_demo_config
    from llmforge.stages import load_config

    root = Path(__file__).resolve().parents[2]
    assert load_config(root / "configs" / "demo-real.yaml") == real_demo_config()
