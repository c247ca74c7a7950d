"""Prepare at growing sizes: peak RSS and tokens/s of `llmforge prepare`, each size in a fresh child process.

    python benchmarks/prepare_scale.py [--sizes 100000 300000 1000000] [--baseline-src DIR [--baseline-sizes N ...]]

Each size runs `prepare` (Alpaca records from benchmarks/prepare.py's generator, max_length 512, truncate, dedupe on)
in a child process. Its peak RSS is the child's own `ru_maxrss` (exact, every page it ever held), and the parent
samples the child's RSS every 0.2 s for the curve over time. `--baseline-src` points at another llmforge source
tree (e.g. `git archive <commit> src | tar -x -C /tmp/before`, then `/tmp/before/src`): its runs are measured
the same way, in the same invocation, and plotted beside. Writes benchmarks/results/prepare_scale.{json,png}
(see --results).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(data: Path, out: Path, max_length: int) -> None:
    """Runs in the child process: one prepare, then one JSON line with its numbers."""
    from llmforge.config import ModelConfig
    from llmforge.data.config import DataConfig
    from llmforge.prepare.config import PrepareConfig
    from llmforge.prepare.runner import prepare

    cfg = PrepareConfig(model=ModelConfig(name_or_path="demo"),
                        data=DataConfig(path=[str(data)], max_length=max_length, overlong="truncate"),
                        output_dir=out)
    start = time.perf_counter()
    report = prepare(cfg).metrics
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime  # all threads; steadier than wall time on a shared machine
    print(json.dumps({"seconds": seconds, "cpu_seconds_process": cpu, "tokens": report["tokens"]["total"],
                      "samples": report["samples"], "peak_rss_bytes": usage.ru_maxrss * 1024}))  # KiB on Linux


def measure(data: Path, out: Path, max_length: int, src: Path | None) -> dict:
    import psutil

    shutil.rmtree(out, ignore_errors=True)  # else a run with the same inputs is prepare's cached answer
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(data), str(out), str(max_length)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    watched, samples, start = psutil.Process(proc.pid), [], time.perf_counter()
    while proc.poll() is None:
        try:
            samples.append((round(time.perf_counter() - start, 2), watched.memory_info().rss))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    stdout, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"prepare child failed ({proc.returncode}) on {data}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {**result, "tokens_per_s": result["tokens"] / result["seconds"],
            "tokens_per_cpu_s": result["tokens"] / result["cpu_seconds_process"], "rss_over_time": samples}


def head_lines(source: Path, target: Path, n: int) -> None:
    if target.exists():
        return
    with open(source, encoding="utf-8") as f, open(target, "w", encoding="utf-8") as g:
        for _, line in zip(range(n), f):
            g.write(line)


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for name, runs in results.items():
        sizes = [r["records"] for r in runs]
        left.plot(sizes, [r["peak_rss_bytes"] / 2**20 for r in runs], marker="o", label=name)
        line, = right.plot(sizes, [r["tokens_per_s"] / 1e3 for r in runs], marker="o", label=f"{name}, wall")
        right.plot(sizes, [r["tokens_per_cpu_s"] / 1e3 for r in runs], marker="s", linestyle="--",
                   color=line.get_color(), label=f"{name}, CPU")
    left.set(xscale="log", xlabel="records", ylabel="peak RSS (MiB)", title="prepare: peak RSS")
    right.set(xscale="log", xlabel="records", ylabel="thousand tokens / s (wall or CPU second)",
              title="prepare: throughput")
    for ax in (left, right):
        ax.set_ylim(bottom=0)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--workdir", type=Path, default=Path("build/bench-prepare"))
    parser.add_argument("--baseline-src", type=Path, help="Another llmforge source tree to measure the same way.")
    parser.add_argument("--baseline-sizes", type=int, nargs="+", help="Sizes for the baseline (default: --sizes).")
    parser.add_argument("--results", type=Path, default=HERE / "results" / "prepare_scale",
                        help="Where to write <results>.json and <results>.png.")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from prepare import synthetic_jsonl

    args.workdir.mkdir(parents=True, exist_ok=True)
    largest = args.workdir / f"synthetic-{max(args.sizes)}.jsonl"
    if not largest.exists():
        synthetic_jsonl(largest, max(args.sizes))
    trees = {"llmforge prepare": None, **({"baseline": args.baseline_src.resolve()} if args.baseline_src else {})}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    baseline_sizes = set(args.baseline_sizes or args.sizes)
    for n in args.sizes:  # in the order given; results are saved after every run
        data = args.workdir / f"synthetic-{n}.jsonl"
        head_lines(largest, data, n)
        for name, src in trees.items():
            if src is not None and n not in baseline_sizes:
                continue
            run = measure(data, args.workdir / "scale-out", args.max_length, src)
            results[name] = sorted([*results[name], {"records": n, **run}], key=lambda r: r["records"])
            print(f"{name:18} {n:>9,} records  {run['seconds']:7.1f} s  {run['tokens_per_s']:9,.0f} tokens/s  "
                  f"{run['tokens_per_cpu_s']:9,.0f} tokens/CPU-s  peak RSS {run['peak_rss_bytes'] / 2**20:7.0f} MiB",
                  flush=True)
            args.results.with_suffix(".json").write_text(json.dumps(
                {"max_length": args.max_length, "cpu": _cpu(), "runs": results}, indent=1) + "\n")
            plot(results, args.results.with_suffix(".png"))
    for name, runs in results.items():
        first, last = runs[0], runs[-1]
        print(f"{name}: {last['records'] // first['records']}x records -> peak RSS "
              f"{last['peak_rss_bytes'] / first['peak_rss_bytes']:.2f}x, tokens/s "
              f"{last['tokens_per_s'] / first['tokens_per_s']:.2f}x")


def _cpu() -> str:
    try:
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        return f"{names[0]} x{len(names)}" if names else "unknown"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
