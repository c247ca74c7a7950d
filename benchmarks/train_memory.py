"""Peak memory of LoRA training on a real model, setting by setting, each in a fresh process.

    python benchmarks/train_memory.py [--model smollm2-135m-instruct] [--batch 8] [--tokens 512] [--steps 3]
                                      [--only model-loss,chunked,chunked+ckpt,defaults,dry-run] [--profile]

Settings (LoRA r16 all-linear, dropout 0.05, batch --batch of records of about --tokens tokens):
- model-loss: the model's own loss over full (batch, tokens, vocabulary) logits, no checkpointing, fp32: the
  recipe as it was before the chunked loss (benchmark-only: the child patches the chunked loss away);
- chunked: the chunked cross-entropy (`llmforge.train.loss`), no checkpointing, fp32;
- chunked+ckpt: the same with gradient checkpointing, fp32;
- defaults: nothing set (`train.precision` and `train.gradient_checkpointing` both auto);
- dry-run: `estimate()` (what `llmforge train --dry-run` runs) with the defaults.
Peak RSS is the child's ru_maxrss (os.wait4): the whole process, Python and libraries included, which is what a
user's machine must hold. s/step is train_runtime_seconds / train_steps from metrics.json (first step included);
on a shared machine it is indicative only. The estimate column is `llmforge.train.memory.memory_estimate` for the
setting. `--profile` prints where one forward pass's saved-for-backward memory goes, by module (batch 2).
Data: synthetic instruction/response records (a few hundred words), prepared by `llmforge prepare` for the model.
Writes benchmarks/results/train_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("the a of to and in is for on with as by be this that from it an are or can we you they will would model "
         "data train test value list time people water house river city small large quickly slowly because however "
         "therefore morning evening garden window market school story answer question").split()
FP32_NO_CKPT = ["--set", "train.gradient_checkpointing=false", "--set", "train.precision=fp32"]
SETTINGS = {  # name -> (CLI flags, the model's own loss instead of the chunked one)
    "model-loss": (FP32_NO_CKPT, True),
    "chunked": (FP32_NO_CKPT, False),
    "chunked+ckpt": (["--set", "train.gradient_checkpointing=true", "--set", "train.precision=fp32"], False),
    "defaults": ([], False),
}
# A child that runs the CLI; with a first argument "model-loss" it first turns the chunked loss off.
TRAIN = """import sys
import llmforge.train.loss
if sys.argv[1] == "model-loss":
    llmforge.train.loss.chunked_loss_supported = lambda model: False
sys.argv = ["llmforge", *sys.argv[2:]]
from llmforge.cli import main
main()
"""
DRY_RUN = """import json, sys
from llmforge.config import ModelConfig, TrainOptions
from llmforge.train.config import TrainConfig
from llmforge.train.estimate import estimate
cfg = TrainConfig(model=ModelConfig(name_or_path=sys.argv[1]), data=sys.argv[2],
                  train=TrainOptions(batch_size=int(sys.argv[3])), output_dir=sys.argv[4])
print("RESULT " + json.dumps(estimate(cfg, measured_steps=2)))
"""
# The estimate of every setting: the loaded model through the formulas; no training step.
ESTIMATES = """import json, sys
import llmforge.train.loss as loss
import llmforge.train.memory as memory
from llmforge.config import ModelConfig, TrainOptions
from llmforge.data.splits import load_split
from llmforge.train.methods import apply_method, load_base
runtime = memory.resident_bytes()
train_set = load_split(sys.argv[2], "train")
lengths = memory.sample_lengths(train_set)
supported = loss.chunked_loss_supported
out = {}
for name, (precision, ckpt, own_loss) in json.loads(sys.argv[4]).items():
    opts = TrainOptions(batch_size=int(sys.argv[3]), precision=precision, gradient_checkpointing=ckpt)
    model = apply_method(load_base(ModelConfig(name_or_path=sys.argv[1]), opts)[0], opts)
    ckpt = memory.gradient_checkpointing(opts, model, max(lengths), min(lengths) != max(lengths))
    loss.chunked_loss_supported = (lambda m: False) if own_loss else supported
    scored = memory.scored_tokens(train_set, opts.batch_size)
    out[name] = memory.memory_estimate(model, opts, max(lengths), scored, min(lengths) != max(lengths), ckpt, runtime)
print("RESULT " + json.dumps(out))
"""
# Where one forward pass's saved-for-backward memory goes: bytes of every tensor autograd saves (weights excluded,
# each storage once), by the module that saved it; the loss outside any module. The model's own loss, no checkpointing.
PROFILE = """import collections, sys, torch
from llmforge.config import ModelConfig, TrainOptions
from llmforge.data.splits import load_split
from llmforge.train.methods import apply_method, load_base
from llmforge.train.runner import make_collator
opts = TrainOptions(batch_size=int(sys.argv[3]))
model, tokenizer = load_base(ModelConfig(name_or_path=sys.argv[1]), opts)
model.config.use_cache = False
model = apply_method(model, opts).train()
rows = load_split(sys.argv[2], "train").remove_columns(["attention_mask"])
batch = make_collator(tokenizer, "grouped")([rows[i] for i in range(opts.batch_size)])
weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
where, saved = ["loss (outside modules)"], {}
for name, module in model.named_modules():
    if not list(module.children()) or type(module).__name__.endswith(("Attention", "MLP")):
        part = ".".join(p for p in name.split(".") if not p.isdigit() and p not in ("base_model", "model", "layers", "default"))
        module.register_forward_pre_hook(lambda m, a, part=part: where.append(part))  # returns None: input kept
        module.register_forward_hook(lambda m, a, o: where.pop() and None)  # None: the output is kept
def pack(t):
    key = t.untyped_storage().data_ptr()
    if key not in weights and key not in saved:
        saved[key] = (t.untyped_storage().nbytes(), where[-1])
    return t
with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
    out = model(**batch)
by = collections.Counter()
for size, part in saved.values():
    by[part] += size
print(f"saved for backward, batch {tuple(batch['input_ids'].shape)}: {sum(by.values()) / 1e9:.2f} GB; "
      f"logits {tuple(out.logits.shape)} {out.logits.numel() * 4 / 1e9:.2f} GB")
for part, size in by.most_common():
    print(f"  {part:40s} {size / 1e9:6.3f} GB")
"""
ESTIMATE_OPTIONS = {"model-loss": ("fp32", False, True), "chunked": ("fp32", False, False),
                    "chunked+ckpt": ("fp32", True, False), "defaults": ("auto", "auto", False),
                    "dry-run": ("auto", "auto", False)}


def synthetic_jsonl(path: Path, records: int, words: int, seed: int = 0) -> None:
    rng = random.Random(seed)

    def text(n: int) -> str:
        out = []
        while n > 0:
            k = rng.randint(8, 18)
            out.append(" ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + ".")
            n -= k
        return " ".join(out)

    with open(path, "w", encoding="utf-8") as f:
        for i in range(records):
            f.write(json.dumps({"instruction": f"Task {i}: " + text(60), "output": text(words)}) + "\n")


def prepare(workdir: Path, model: str, tokens: int) -> Path:
    prep = workdir / "prep"
    if not (prep / "manifest.json").exists():
        workdir.mkdir(parents=True, exist_ok=True)
        synthetic_jsonl(workdir / "long.jsonl", 200, words=int(tokens * 0.7))  # ~1.4 tokens/word with the prompt
        subprocess.run([sys.executable, "-m", "llmforge.cli", "prepare", "--data", str(workdir / "long.jsonl"),
                        "--model", model, "--output", str(prep), "--max-length", str(tokens)], check=True)
    return prep


def run_child(code: str, args: list[str], log: Path) -> tuple[int, int, str]:
    """(exit status, peak RSS bytes, stdout) of `python -c code args` in a fresh process."""
    with open(log, "w", encoding="utf-8") as err:
        proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=err, text=True)
        out = proc.stdout.read() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024, out  # Linux reports KiB


def run_setting(name: str, args: argparse.Namespace, prep: Path) -> dict:
    out_dir = args.workdir / f"run-{name}"
    log = args.workdir / f"{name}.log"
    if name == "dry-run":
        rc, peak, out = run_child(DRY_RUN, [args.model, str(prep), str(args.batch), str(out_dir)], log)
        result = json.loads(out.split("RESULT ", 1)[1]) if rc == 0 else {}
        return {"rc": rc, "peak_rss_bytes": peak, "s_per_step": result.get("seconds_per_step"),
                "gradient_checkpointing": result.get("gradient_checkpointing"),
                "estimate_bytes": result.get("memory_bytes", {}).get("total")}
    flags, own_loss = SETTINGS[name]
    cli = ["train", "--model", args.model, "--data", str(prep), "--method", "lora", "--max-steps", str(args.steps),
           "--output", str(out_dir), "--set", f"train.batch_size={args.batch}", *flags]
    rc, peak, _ = run_child(TRAIN, ["model-loss" if own_loss else "-", *cli], log)
    metrics = json.loads((out_dir / "metrics.json").read_text()) if rc == 0 else {}
    steps = metrics.get("train_steps") or 0
    return {"rc": rc, "peak_rss_bytes": peak, "s_per_step": metrics["train_runtime_seconds"] / steps if steps else None,
            "gradient_checkpointing": metrics.get("gradient_checkpointing"), "precision": metrics.get("precision"),
            "chunked_loss": metrics.get("chunked_loss"), "train_loss": metrics.get("train_loss")}


def show(results: dict) -> None:
    """The table; the dry run's estimate is compared with the defaults run it estimates, not with itself."""
    print(f"\n{'setting':14s} {'peak RSS':>9s} {'estimate':>9s} {'est/peak':>8s} {'s/step':>7s}  checkpointing")
    for name, r in results.items():
        est = r.get("estimate_bytes")
        measured = results.get("defaults", r) if name == "dry-run" else r
        ratio = f"{est / measured['peak_rss_bytes']:.2f}" if est and measured["rc"] == 0 else "-"
        step = f"{r['s_per_step']:.1f}" if r.get("s_per_step") else "-"
        print(f"{name:14s} {r['peak_rss_bytes'] / 1e9:8.2f}G {(est or 0) / 1e9:8.2f}G {ratio:>8s} {step:>7s}  "
              f"{r.get('gradient_checkpointing')}" + ("" if r["rc"] == 0 else f"  (failed, exit {r['rc']})"))
    print("s/step on a shared machine is indicative only; memory is not affected by other processes.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=512, help="about this many tokens per record (max length)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--only", default=",".join([*SETTINGS, "dry-run"]))
    parser.add_argument("--profile", action="store_true", help="also print saved-for-backward memory by module")
    parser.add_argument("--force", action="store_true", help="run settings estimated not to fit in free memory")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench-train-memory")
    args = parser.parse_args()
    prep = prepare(args.workdir, args.model, args.tokens)
    names = [n for n in args.only.split(",") if n]
    if args.profile:
        rc, peak, out = run_child(PROFILE, [args.model, str(prep), "2"], args.workdir / "profile.log")
        print(out + f"(peak RSS of the profile: {peak / 1e9:.2f} GB)")
    rc, _, out = run_child(ESTIMATES, [args.model, str(prep), str(args.batch),
                                       json.dumps({n: ESTIMATE_OPTIONS[n] for n in names})],
                           args.workdir / "estimates.log")
    estimates = json.loads(out.split("RESULT ", 1)[1]) if rc == 0 else {}
    results = {}
    for name in names:
        needs, free = estimates.get(name, {}).get("total", 0), available_bytes()
        if needs > 0.9 * free and not args.force:  # a shared machine: do not take the others' memory
            print(f"{name}: skipped, estimated {needs / 1e9:.1f} GB > 90% of {free / 1e9:.1f} GB available (--force)")
            continue
        started = time.perf_counter()
        results[name] = run_setting(name, args, prep)
        results[name].setdefault("estimate_bytes", estimates.get(name, {}).get("total"))
        results[name]["estimate_parts"] = estimates.get(name)
        print(f"{name}: {results[name]} ({time.perf_counter() - started:.0f} s)", flush=True)
    show(results)
    path = ROOT / "benchmarks" / "results" / "train_memory.json"
    kept = json.loads(path.read_text())["results"] if path.is_file() else {}  # settings not run keep their last
    report = {"model": args.model, "batch": args.batch, "tokens": args.tokens, "steps": args.steps,
              "cpu": _cpu(), "results": {**kept, **results}}
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def available_bytes() -> int:
    """MemAvailable (Linux), else the machine's memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


if __name__ == "__main__":
    main()
