"""Playground cost: llmforge's /ui (static files under FastAPI) against Gradio, in install size and start time.

    python benchmarks/playground_cost.py [--gradio-venv /tmp/gradio-venv] [--runs 5] [--server-runs 3]

llmforge: the bytes of src/llmforge/serve/ui/static (what the page downloads, and what the wheel adds; no extra
Python package: it is FastAPI's StaticFiles), the time to `create_app(ServeSettings(models={"demo": "demo"},
ui=...))` with and without the playground (fresh interpreter each run, median), and the time from process start
until `python -m llmforge.serve.runner SETTINGS` answers 200 on GET /ui/ (ui on) or GET /health (ui off).

Gradio, the field's habit: installed into a SEPARATE throwaway venv (never ours) with `pip install gradio`.
Measured: installed bytes of gradio plus every distribution it pulled that our venv lacks (sizes from each
distribution's RECORD via importlib.metadata), how many such packages, the total of `pip download gradio`
(all wheels, and only those of the extra packages), `import gradio` (in a fresh process, median; also that process's wall time incl. exit, and
`-X importtime`'s cumulative figure), and the time from process start until a minimal
`gr.ChatInterface(fn=lambda m, h: m).launch(...)` answers 200 on / (GRADIO_ANALYTICS_ENABLED=False, no share
link). Sequential, one process at a time. Writes benchmarks/results/playground_cost.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "src" / "llmforge" / "serve" / "ui" / "static"
OUR_PY = sys.executable
READY_TIMEOUT_S = 180.0
# No share link, no analytics, no version check: this machine has no network, and a benchmark should not call home.
GRADIO_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_SHARE": "False", "HF_HUB_OFFLINE": "1",
              "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}

# Run inside a venv's interpreter: {normalized name: {name, version, bytes}} of every installed distribution.
DISTS_CODE = r"""
import importlib.metadata as md, json, os, re
out = {}
for d in md.distributions():
    name = d.metadata["Name"]
    total = 0
    for f in d.files or []:
        try:
            total += os.path.getsize(d.locate_file(f))
        except OSError:
            pass
    out[re.sub(r"[-_.]+", "-", name).lower()] = {"name": name, "version": d.version, "bytes": total}
print(json.dumps(out))
"""

CREATE_APP_CODE = r"""
import sys, time
t0 = time.perf_counter()
from llmforge.serve.app import create_app
from llmforge.serve.settings import ServeSettings
t1 = time.perf_counter()
create_app(ServeSettings(models={"demo": "demo"}, ui=sys.argv[1] == "1"))
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""

GRADIO_LAUNCH_CODE = r"""
import sys, time
import gradio as gr
gr.ChatInterface(fn=lambda m, h: m).launch(server_name="127.0.0.1", server_port=int(sys.argv[1]),
                                          prevent_thread_lock=True, share=False)
time.sleep(3600)
"""


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_bytes(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def gzip_bytes(path: Path) -> int:
    return sum(len(gzip.compress(p.read_bytes(), 6)) for p in path.rglob("*") if p.is_file())


def dists(python: str) -> dict[str, Any]:
    return json.loads(subprocess.run([python, "-c", DISTS_CODE], check=True, capture_output=True, text=True).stdout)


def wall(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def time_to_200(cmd: list[str], url: str, env: dict[str, str] | None = None) -> float:
    """Seconds from Popen until GET url answers 200; the process is then stopped (SIGTERM, then SIGKILL)."""
    log = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True, cwd=ROOT)
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{cmd[:3]} exited {proc.returncode}: {log.read()[-2000:].decode(errors='replace')}")
            if time.perf_counter() - t0 > READY_TIMEOUT_S:
                raise RuntimeError(f"{url} not ready after {READY_TIMEOUT_S}s")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        r.read()
                        return time.perf_counter() - t0
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 4)


def measure_llmforge(runs: int, server_runs: int) -> dict[str, Any]:
    static_bytes, static_files = tree_bytes(STATIC)
    result: dict[str, Any] = {"static_dir": str(STATIC.relative_to(ROOT)), "static_bytes": static_bytes,
                              "static_files": static_files, "static_gzip_bytes": gzip_bytes(STATIC),
                              "extra_packages": [], "extra_packages_count": 0}
    for ui in (False, True):
        key = "ui" if ui else "no_ui"
        imports, creates = [], []
        for _ in range(runs):
            out = subprocess.run([OUR_PY, "-c", CREATE_APP_CODE, "1" if ui else "0"], check=True,
                                 capture_output=True, text=True, cwd=ROOT).stdout.split()
            imports.append(float(out[0]))
            creates.append(float(out[1]))
        result[f"import_s_{key}"] = median(imports)
        result[f"create_app_s_{key}"] = median(creates)
        print(f"llmforge create_app ui={ui}: {result[f'create_app_s_{key}']:.4f}s (imports {median(imports):.3f}s)",
              flush=True)
        ready = []
        for _ in range(server_runs):
            port = free_port()
            settings = json.dumps({"models": {"demo": "demo"}, "port": port, "host": "127.0.0.1", "ui": ui})
            url = f"http://127.0.0.1:{port}/ui/" if ui else f"http://127.0.0.1:{port}/health"
            ready.append(time_to_200([OUR_PY, "-m", "llmforge.serve.runner", settings], url))
        result[f"ready_s_{key}"] = median(ready)
        result[f"ready_s_{key}_runs"] = [round(x, 4) for x in ready]
        print(f"llmforge server ready ui={ui}: {result[f'ready_s_{key}']:.3f}s {result[f'ready_s_{key}_runs']}",
              flush=True)
    result["create_app_s_ui_extra"] = round(result["create_app_s_ui"] - result["create_app_s_no_ui"], 4)
    result["ready_s_ui_extra"] = round(result["ready_s_ui"] - result["ready_s_no_ui"], 4)
    return result


def ensure_gradio_venv(venv: Path) -> str | None:
    """The throwaway venv with gradio; None, or why it could not be had."""
    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import gradio"], capture_output=True).returncode == 0:
        return None
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "gradio"], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"pip install gradio failed: {proc.stderr.strip()[-1000:]}"
    return None


def wheel_name(filename: str) -> str:
    stem = re.sub(r"\.(whl|tar\.gz|zip)$", "", filename)
    return norm(stem.split("-")[0]) if filename.endswith(".whl") else norm(stem.rsplit("-", 1)[0])


def measure_gradio(venv: Path, runs: int, server_runs: int, download_dir: Path) -> dict[str, Any]:
    why = ensure_gradio_venv(venv)
    if why:
        return {"available": False, "why": why}
    py = str(venv / "bin" / "python")
    theirs, ours = dists(py), dists(OUR_PY)
    base = {"pip", "setuptools", "wheel"}  # what `python -m venv` puts there itself
    extra = {k: v for k, v in theirs.items() if k not in ours and k not in base}
    result: dict[str, Any] = {
        "available": True, "version": theirs["gradio"]["version"], "venv": str(venv),
        "extra_packages_count": len(extra),
        "extra_packages": sorted(f"{v['name']}=={v['version']}" for v in extra.values()),
        "extra_installed_bytes": sum(v["bytes"] for v in extra.values()),
        "gradio_alone_installed_bytes": theirs["gradio"]["bytes"],
        "all_deps_installed_bytes": sum(v["bytes"] for k, v in theirs.items() if k not in base),
        "all_deps_count": len([k for k in theirs if k not in base]),
        "largest_extra": sorted(((v["name"], v["bytes"]) for v in extra.values()), key=lambda x: -x[1])[:8],
    }
    print(f"gradio {result['version']}: {len(extra)} extra packages, {result['extra_installed_bytes']/1e6:.1f} MB",
          flush=True)

    shutil.rmtree(download_dir, ignore_errors=True)
    proc = subprocess.run([py, "-m", "pip", "download", "-q", "gradio", "-d", str(download_dir)],
                          capture_output=True, text=True)
    if proc.returncode == 0:
        files = [p for p in download_dir.iterdir() if p.is_file()]
        result["download_bytes_all"] = sum(p.stat().st_size for p in files)
        result["download_files_all"] = len(files)
        extra_files = [p for p in files if wheel_name(p.name) in extra]
        result["download_bytes_extra"] = sum(p.stat().st_size for p in extra_files)
        result["download_files_extra"] = len(extra_files)
    else:
        result["download_error"] = proc.stderr.strip()[-1000:]

    env = {**os.environ, **GRADIO_ENV}
    result["env"] = GRADIO_ENV
    timed = "import time; t = time.perf_counter(); import gradio; print(time.perf_counter() - t)"
    result["import_s"] = median([float(subprocess.run([py, "-c", timed], check=True, capture_output=True,
                                                      text=True, env=env).stdout) for _ in range(runs)])
    result["import_process_wall_s"] = median([wall([py, "-c", "import gradio"], env) for _ in range(runs)])
    baseline = median([wall([py, "-c", "pass"], env) for _ in range(runs)])
    result["interpreter_s"] = baseline
    imp = subprocess.run([py, "-X", "importtime", "-c", "import gradio"], capture_output=True, text=True, env=env)
    line = [ln for ln in imp.stderr.splitlines() if ln.rstrip().endswith("| gradio")]
    if line:
        result["importtime_cumulative_s"] = round(int(line[-1].split("|")[1]) / 1e6, 4)
    print(f"import gradio: {result['import_s']:.3f}s in-process, {result['import_process_wall_s']:.3f}s process wall "
          f"incl. exit (bare interpreter {baseline:.3f}s)", flush=True)

    script = download_dir.parent / "gradio_launch.py"
    script.write_text(GRADIO_LAUNCH_CODE)
    ready = []
    for _ in range(server_runs):
        port = free_port()
        ready.append(time_to_200([py, str(script), str(port)], f"http://127.0.0.1:{port}/", env))
    result["ready_s"] = median(ready)
    result["ready_s_runs"] = [round(x, 4) for x in ready]
    print(f"gradio ChatInterface ready: {result['ready_s']:.3f}s {result['ready_s_runs']}", flush=True)
    return result


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 1) if a is not None and b else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gradio-venv", type=Path, default=Path("/tmp/gradio-venv"),
                        help="throwaway venv for gradio (created with `pip install gradio` when missing)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/playground-cost"))
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per create_app / import median")
    parser.add_argument("--server-runs", type=int, default=3, help="server starts per ready-time median")
    parser.add_argument("--skip-gradio", action="store_true")
    args = parser.parse_args()
    if args.gradio_venv.resolve() == (ROOT / ".venv").resolve() or Path(sys.prefix) == args.gradio_venv.resolve():
        sys.exit("--gradio-venv must be a throwaway venv, not this project's")

    llm = measure_llmforge(args.runs, args.server_runs)
    gr = {"available": False, "why": "--skip-gradio"} if args.skip_gradio else \
        measure_gradio(args.gradio_venv, min(args.runs, 3), args.server_runs, args.work / "wheels")

    rows = [("extra Python packages", str(llm["extra_packages_count"]), str(gr.get("extra_packages_count", "-")), None),
            ("install size, MB (llmforge: static dir)", f"{llm['static_bytes']/1e6:.3f}",
             f"{gr['extra_installed_bytes']/1e6:.1f}" if gr.get("available") else "-",
             ratio(gr.get("extra_installed_bytes"), llm["static_bytes"])),
            ("download, MB (llmforge: page; gradio: extra wheels)", f"{llm['static_bytes']/1e6:.3f}",
             f"{gr['download_bytes_extra']/1e6:.1f}" if "download_bytes_extra" in gr else "-",
             ratio(gr.get("download_bytes_extra"), llm["static_bytes"])),
            ("UI start cost, s (llmforge: create_app ui - no ui; gradio: import)",
             f"{llm['create_app_s_ui_extra']:.4f}", f"{gr['import_s']:.3f}" if "import_s" in gr else "-",
             ratio(gr.get("import_s"), max(llm["create_app_s_ui_extra"], 1e-4))),
            ("process start -> 200, s (llmforge: /ui/ incl. model; gradio: /)", f"{llm['ready_s_ui']:.3f}",
             f"{gr['ready_s']:.3f}" if "ready_s" in gr else "-", ratio(gr.get("ready_s"), llm["ready_s_ui"]))]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'':{width}}  {'llmforge':>10}  {'gradio':>10}  {'gradio/llmforge':>15}")
    for name, a, b, r in rows:
        print(f"{name:{width}}  {a:>10}  {b:>10}  {'' if r is None else f'{r}x':>15}")
    print(f"\nllmforge: create_app {llm['create_app_s_no_ui']:.4f}s -> {llm['create_app_s_ui']:.4f}s with ui; "
          f"server ready {llm['ready_s_no_ui']:.3f}s (/health, no ui) -> {llm['ready_s_ui']:.3f}s (/ui/)")

    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_model(),
              "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
              "llmforge": llm, "gradio": gr,
              "ratios_gradio_over_llmforge": {r[0]: r[3] for r in rows if r[3] is not None}}
    out = ROOT / "benchmarks" / "results" / "playground_cost.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
