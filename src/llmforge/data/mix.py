"""Old plus new prepared data as one prepared dataset (`llmforge retrain`'s training data).

Both inputs are finished `prepare` runs tokenized for the same model. The mix keeps a seeded sample of the old
training records beside every new one, and all validation and test records of both, so a held-out score covers the
task the model already learnt as well as the new one; the held-out splits are shuffled (seeded), so a scorer that
takes the first N samples (eval.max_samples) sees old and new records alike. The result is a prepared-dataset run
like any other: its parents are the two inputs, its fingerprint covers theirs and the sample.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from llmforge.artifacts import RunDir, StageResult, read_manifest
from llmforge.data.splits import load_split, share
from llmforge.errors import LlmforgeError

SPLITS = ("train", "validation", "test")


def _template(run: Path, manifest: dict[str, Any]) -> str | None:
    name = manifest.get("chat_template")
    return (run / name).read_text(encoding="utf-8") if name else None


def mix_prepared(old: Path, new: Path, output_dir: Path, old_fraction: float = 1.0, old_records: int | None = None,
                 seed: int = 0) -> StageResult:
    """`new`'s splits plus `old_records` (else `old_fraction`) of `old`'s training records, chosen by `seed`, and
    all of `old`'s validation and test records, written as a prepared dataset at `output_dir`."""
    from datasets import concatenate_datasets

    manifests = {path: read_manifest(path) for path in (old, new)}
    for path, manifest in manifests.items():
        if manifest.get("kind") != "prepared-dataset":
            raise LlmforgeError(f"{path} is a '{manifest.get('kind')}' run, not a prepared dataset")
    template = _template(new, manifests[new])
    if _template(old, manifests[old]) not in (None, template):
        raise LlmforgeError(f"the new data ({new}) was rendered with another chat template than the old data ({old}); "
                            "prepare it with the old data's data.chat_template")
    old_train = load_split(old, "train")
    keep = min(len(old_train), old_records if old_records is not None else share(len(old_train), old_fraction))
    # In memory: `datasets` would otherwise write the shuffle's index cache into the old run, changing its files.
    sample = old_train.shuffle(seed=seed, keep_in_memory=True).select(range(keep), keep_in_memory=True)
    parts = {"train": [sample, load_split(new, "train")]}
    parts |= {split: [load_split(old, split), load_split(new, split)] for split in ("validation", "test")}
    digest = hashlib.sha256("\n".join([str(manifests[old].get("dataset_fingerprint")),
                                       str(manifests[new].get("dataset_fingerprint")), str(keep), str(seed)]).encode())
    config = {"old": str(Path(old).resolve()), "new": str(Path(new).resolve()), "old_fraction": old_fraction,
              "old_records": old_records, "seed": seed}
    with RunDir(output_dir, kind="prepared-dataset", command="retrain", config=config, parents=[old, new],
                dataset_fingerprint=digest.hexdigest()) as run:
        counts = {}
        for split, (a, b) in parts.items():
            try:
                mixed = concatenate_datasets([a, b])
            except ValueError as exc:  # different columns or types: prepared for another model or format
                raise LlmforgeError(f"the {split} splits of {old} and {new} do not fit together: {exc}") from exc
            if split != "train" and len(mixed):  # eval.max_samples takes the first N: old and new ones alike
                mixed = mixed.shuffle(seed=seed, keep_in_memory=True)
            _save_quietly(mixed, run.file(split))
            counts[split] = len(mixed)
        if template is not None:
            name = manifests[new]["chat_template"]
            run.file(name).write_text(template, encoding="utf-8")
            run.extra = {"chat_template": name}
        metrics = {"samples": counts, "old_train_records": len(old_train), "old_train_kept": keep,
                   "new_train_records": len(parts["train"][1]), "old_held_out_records":
                   {split: len(parts[split][0]) for split in ("validation", "test")}}
        run.finish(metrics)
    return StageResult(output_dir, metrics)


def _save_quietly(dataset: Any, path: Path) -> None:
    """save_to_disk without its progress bar (a library does not print), the caller's setting restored."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        dataset.save_to_disk(str(path))
    finally:
        if not was_disabled:
            enable_progress_bars()
