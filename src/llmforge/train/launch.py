"""Data-parallel training: `llmforge train --nproc N` runs the same recipe in N processes through torchrun.

The launcher prepares the run directory; every rank trains on its shard of each global batch (gloo on CPU,
NCCL on GPUs); rank 0 evaluates and publishes. The global batch is nproc * batch_size * grad_accum, so to
compare with one process keep that product equal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from llmforge.artifacts import RunDir, StageResult, read_manifest
from llmforge.config import validate
from llmforge.errors import LlmforgeError
from llmforge.train.config import TrainConfig
from llmforge.train.runner import train


def launch(cfg: TrainConfig, nproc: int, resume: bool = False) -> StageResult:
    if nproc < 1:
        raise LlmforgeError(f"--nproc must be at least 1, got {nproc}")
    if not resume:  # create a fresh `<output>.partial/`, which every rank joins (rank 0 publishes it)
        with RunDir(cfg.output_dir, kind="model", command="train", config=cfg):
            pass
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg.model_dump(mode="json"), f)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "llmforge.train.launch", f.name, *(["--resume"] if resume else [])]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))}
    try:
        proc = subprocess.run(cmd, env=env)
    finally:
        Path(f.name).unlink(missing_ok=True)
    if proc.returncode != 0:
        raise LlmforgeError(f"distributed training failed (exit {proc.returncode}); see the output above")
    read_manifest(cfg.output_dir)  # rank 0 published it
    return StageResult(cfg.output_dir, json.loads((cfg.output_dir / "metrics.json").read_text()))


def _worker(job: str, resume: bool) -> None:
    cfg = validate(TrainConfig, json.loads(Path(job).read_text()), job)
    train(cfg, resume=resume, launched=True)


if __name__ == "__main__":
    _worker(sys.argv[1], "--resume" in sys.argv[2:])
