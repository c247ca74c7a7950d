"""fp32 against bf16 on this CPU, on a real model: what `precision: auto` (llmforge.models.cpu) rests on.

    python benchmarks/precision.py --data PREPARED [--model smollm2-135m-instruct] [--threads 2] [--steps 8]
                                   [--only train|decode|threads]

- train: LoRA (the recipe's defaults: r16, all-linear) steps at batch 8 of the prepared train split, fp32 and bf16
  autocast over fp32 weights alternating step by step on one model, so both see the same machine load (a shared
  machine's load drifts by minutes; two runs one after the other would measure the drift). Prints tokens/s.
- decode: the transformers serving backend (what `llmforge serve` runs) with fp32 and bf16 weights, greedy, batch
  1 and 8, interleaved; parity: bf16's top-1 agreement with fp32 when fed fp32's greedy tokens, the largest logit
  difference, and whether free-running greedy replies are identical.
- threads (`--only threads`): the serving backend's decode with 1 thread and with every usable core, interleaved.
The held-out losses come from the train part (fp32 scoring of each run's adapter after `--eval-at` steps).
Writes benchmarks/results/precision.json with the machine (llmforge.machine) beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["What is the capital of France?", "Write a Python function that adds two numbers.",
             "Name three primary colors.", "Explain what a list comprehension is.",
             "How many legs does a spider have?", "Give me a synonym for happy.",
             "What does HTTP stand for?", "Translate 'good morning' to Spanish."]


def train_ab(model_ref: str, data: Path, steps: int, eval_at: tuple[int, ...], eval_samples: int) -> dict[str, Any]:
    """LoRA adapters on one shared base, each with its own optimizer, schedule and RNG stream, stepped in turn on
    the same batches: fp32 and bf16 autocast from the same init (seed 0), and fp32 from seed 1, which measures how
    far two fp32 runs land apart anyway. Held-out loss in fp32 at each of `eval_at` steps. The adapters come from
    the recipe's `apply_method`, so under bf16 each LoRA layer's sum stays in fp32 as in a real run
    (`adapter_sums_in_fp32`; a no-op for the fp32 runs)."""
    from transformers import get_cosine_schedule_with_warmup

    from llmforge.config import ModelConfig, TrainOptions
    from llmforge.data.splits import load_split
    from llmforge.metrics.score import score
    from llmforge.train.loss import lm_loss
    from llmforge.train.methods import apply_method, load_base
    from llmforge.train.runner import make_collator

    opts = TrainOptions()
    model, tokenizer = load_base(ModelConfig(name_or_path=model_ref), opts)
    model.config.use_cache = False
    runs = {"fp32": ("fp32", 0), "bf16": ("bf16", 0), "fp32 seed 1": ("fp32", 1)}
    names = {"fp32": "default", "bf16": "bf16", "fp32 seed 1": "seed1"}
    torch.manual_seed(0)
    model = apply_method(model, opts)
    for run, (_, seed) in runs.items():
        if names[run] != "default":
            torch.manual_seed(seed)
            model.add_adapter(names[run], model.peft_config["default"])
    rows = load_split(data, "train").remove_columns(["attention_mask"])
    validation = load_split(data, "validation")
    validation = validation.select(range(min(eval_samples, len(validation))))
    collate = make_collator(tokenizer, "grouped")
    batches = [collate([rows[i] for i in range(b * 8, b * 8 + 8)]) for b in range(steps)]
    state: dict[str, dict[str, Any]] = {}
    for run, (_, seed) in runs.items():
        params = [p for n, p in model.named_parameters() if f".{names[run]}." in n]
        optimizer = torch.optim.AdamW(params, lr=opts.learning_rate, weight_decay=opts.weight_decay)
        warmup = int(opts.warmup_ratio * steps + 0.999)
        torch.manual_seed(seed)
        state[run] = {"optimizer": optimizer, "rng": torch.get_rng_state(), "seconds": [], "eval": {},
                      "schedule": get_cosine_schedule_with_warmup(optimizer, warmup, steps)}

    def step(run: str, batch: dict[str, torch.Tensor]) -> None:
        s = state[run]
        model.set_adapter(names[run])
        model.train()
        torch.set_rng_state(s["rng"])  # each run's dropout masks are its own, whatever ran in between
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=runs[run][0] == "bf16"):
            loss = lm_loss(model, batch)[0]  # llmforge's training loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], opts.max_grad_norm)
        s["optimizer"].step()
        s["schedule"].step()
        s["optimizer"].zero_grad(set_to_none=True)
        s["seconds"].append(time.perf_counter() - start)
        s["rng"] = torch.get_rng_state()

    tokens = 0
    for i, batch in enumerate(batches, 1):
        for run in list(runs) if i % 2 else list(runs)[::-1]:
            step(run, batch)
        tokens += int(batch["attention_mask"].sum())  # non-padding tokens, as the Trainer counts them
        if i in eval_at:
            for run in runs:
                model.set_adapter(names[run])
                model.eval()
                s = state[run]
                s["eval"][i] = score(model, validation, 8)["loss"]
            print(f"step {i}: held-out loss " + ", ".join(f"{r} {state[r]['eval'][i]:.4f}" for r in runs), flush=True)
    # the first step of each run pays one-time costs (allocations, oneDNN kernel choice): speed from the rest
    speed = {r: (tokens - int(batches[0]["attention_mask"].sum())) / sum(state[r]["seconds"][1:]) for r in runs}
    return {"steps": steps, "batch": 8, "eval_samples": len(validation),
            "tokens_per_second": speed, "bf16_speedup": speed["bf16"] / speed["fp32"],
            "held_out_loss": {r: state[r]["eval"] for r in runs},
            "bf16_vs_fp32": {i: state["bf16"]["eval"][i] / state["fp32"]["eval"][i] - 1 for i in eval_at},
            "fp32_seed1_vs_fp32": {i: state["fp32 seed 1"]["eval"][i] / state["fp32"]["eval"][i] - 1 for i in eval_at}}


def _greedy(backend: Any, prompts: list[list[int]], n: int, forced: torch.Tensor | None = None) -> tuple:
    logits, state = backend.prefill(prompts)  # (B, V)
    tokens, steps = [], [logits]
    nxt = logits.argmax(-1) if forced is None else forced[:, 0]
    tokens.append(nxt)
    start = time.perf_counter()
    for i in range(1, n):
        logits = backend.decode(state, nxt)
        steps.append(logits)
        nxt = logits.argmax(-1) if forced is None else forced[:, i]
        tokens.append(nxt)
    rate = (n - 1) * len(prompts) / (time.perf_counter() - start)  # prefill excluded
    return torch.stack(tokens, 1), torch.stack(steps, 1), rate  # (B, n), (B, n, V), tok/s


def decode(model_ref: str, n: int = 32, repeats: int = 3) -> dict[str, Any]:
    from llmforge.serve.backends import LoadOptions, load_backend

    backends = {d: load_backend(model_ref, LoadOptions(device="cpu", dtype=d)) for d in ("float32", "bfloat16")}
    tokenizer = backends["float32"].tokenizer
    prompts = [list(tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                                  tokenize=True, return_dict=True)["input_ids"]) for q in QUESTIONS]
    rates: dict[str, list[float]] = {}
    for rep in range(repeats):
        for batch in (1, 8):
            for dtype in list(backends)[:: 1 if rep % 2 == 0 else -1]:
                rates.setdefault(f"{dtype} batch {batch}", []).append(_greedy(backends[dtype], prompts[:batch], n)[2])
    agree = total = identical = 0
    max_diff = 0.0
    for prompt in prompts:  # one at a time: no padding in the comparison
        ref_tokens, ref_logits, _ = _greedy(backends["float32"], [prompt], n)
        _, logits, _ = _greedy(backends["bfloat16"], [prompt], n, forced=ref_tokens)
        agree += int((logits.argmax(-1) == ref_logits.argmax(-1)).sum())
        total += ref_tokens.numel()
        max_diff = max(max_diff, float((logits - ref_logits).abs().max()))
        identical += bool(torch.equal(_greedy(backends["bfloat16"], [prompt], n)[0], ref_tokens))
    medians = {k: statistics.median(v) for k, v in rates.items()}
    return {"tokens_per_second": medians, "runs": rates, "new_tokens": n,
            "bf16_speedup": {b: medians[f"bfloat16 batch {b}"] / medians[f"float32 batch {b}"] for b in (1, 8)},
            "top1_agreement": agree / total, "max_abs_logit_diff": max_diff,
            "greedy_identical": f"{identical}/{len(prompts)}"}


def threads(model_ref: str, n: int = 32, repeats: int = 3) -> dict[str, Any]:
    """Decode tokens/s of the serving backend (dtype auto) with 1 thread and with every usable core, interleaved."""
    from llmforge.models.cpu import cpu_threads
    from llmforge.serve.backends import LoadOptions, load_backend

    backend = load_backend(model_ref, LoadOptions(device="cpu"))
    prompts = [list(backend.tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                                          tokenize=True, return_dict=True)["input_ids"])
               for q in QUESTIONS]
    counts = sorted({1, cpu_threads()})
    rates: dict[str, list[float]] = {}
    for rep in range(repeats):
        for count in counts[:: 1 if rep % 2 == 0 else -1]:
            torch.set_num_threads(count)
            for batch in (1, 8):
                rates.setdefault(f"{count} threads batch {batch}", []).append(_greedy(backend, prompts[:batch], n)[2])
    return {"dtype": backend.info["dtype"], "tokens_per_second": {k: statistics.median(v) for k, v in rates.items()},
            "runs": rates}


def main() -> None:
    from llmforge.machine import machine

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", type=Path, help="a prepared dataset (llmforge prepare) for the train steps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable cores)")
    parser.add_argument("--steps", type=int, default=30, help="train steps per run")
    parser.add_argument("--eval-at", type=int, nargs="+", default=[10, 30], help="steps after which to score")
    parser.add_argument("--eval-samples", type=int, default=64, help="validation samples scored")
    parser.add_argument("--only", choices=["train", "decode", "threads"], default=None)
    args = parser.parse_args()
    from llmforge.models.cpu import cpu_threads

    torch.set_num_threads(cpu_threads(args.threads))
    out = ROOT / "benchmarks" / "results" / "precision.json"
    result: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}  # a part not run keeps its last
    result.update(machine=machine(), threads=torch.get_num_threads(), model=args.model)
    if args.only != "decode" and args.data:
        result["train"] = train_ab(args.model, args.data, args.steps, tuple(args.eval_at), args.eval_samples)
        print(json.dumps(result["train"], indent=1))
    if args.only == "threads":
        result["threads_decode"] = threads(args.model)
        print(json.dumps(result["threads_decode"]["tokens_per_second"], indent=1))
    if args.only in (None, "decode"):
        result["decode"] = decode(args.model)
        print(json.dumps({k: v for k, v in result["decode"].items() if k != "runs"}, indent=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
