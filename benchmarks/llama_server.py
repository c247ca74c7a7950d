"""llama.cpp's own OpenAI server (`llama-server`), built once from the source the llama-cpp-python sdist vendors.

    python benchmarks/llama_server.py          # builds (or finds) it and prints the binary's path

The sdist is fetched by pip (`pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36`, 77 MB) into
build/llama-server/ unless it is already there; nothing else touches the network (no curl, no prebuilt web UI).
The build is portable, never `-march=native` (a GGML_NATIVE build died with SIGILL on an AMX Xeon): it enables the
x86 levels this CPU reports (AVX2 always; AVX-512, VNNI, bf16 when present) and is cached per level, under
build/llama-server/<level>/, because the machines here change from AVX2-only EPYCs to AVX-512 Xeons. ~5 min on
2 cores. A failed build leaves its log in build/llama-server/<level>/build.log.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSION = "0.3.36"
HOME = ROOT / "build" / "llama-server"


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def build_options(flags: set[str]) -> tuple[str, list[str]]:
    """(level name, ggml cmake options) for the x86 features in `flags`."""
    names, options = ["avx2"], ["-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BMI2=ON"]
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= flags:
        names.append("avx512")
        options.append("-DGGML_AVX512=ON")
        for flag, option in (("avx512vbmi", "AVX512_VBMI"), ("avx512_vnni", "AVX512_VNNI"),
                             ("avx512_bf16", "AVX512_BF16")):
            if flag in flags:
                names.append(option.lower().removeprefix("avx512_"))
                options.append(f"-DGGML_{option}=ON")
    return "-".join(names), options


def build(home: Path = HOME) -> Path:
    """The llama-server binary for this CPU's level, building it the first time; raises RuntimeError with the
    reason (and the log's path) when it cannot."""
    level, options = build_options(cpu_flags())
    out = home / level
    binary = out / "bin" / "llama-server"
    if binary.is_file():
        return binary
    home.mkdir(parents=True, exist_ok=True)
    with (home / f"{level}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second caller waits for the first build instead of racing it
        if not binary.is_file():
            _build(home, out, options)
    return binary


def _build(home: Path, out: Path, options: list[str]) -> None:
    binary = out / "bin" / "llama-server"
    sdist = home / f"llama_cpp_python-{VERSION}.tar.gz"
    if not sdist.is_file():
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
              f"llama-cpp-python=={VERSION}", "-d", str(home)], home / "download.log")
    source = home / f"llama_cpp_python-{VERSION}" / "vendor" / "llama.cpp"
    if not (source / "CMakeLists.txt").is_file():
        with tarfile.open(sdist) as tar:
            tar.extractall(home, filter="data")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "build.log"
    _run(["cmake", "-S", str(source), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=OFF",
          "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TESTS=OFF",
          "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF", *options], log)
    _run(["cmake", "--build", str(out), "--target", "llama-server", "-j", str(max(1, _cores()))], log)
    if not binary.is_file():
        raise RuntimeError(f"the build finished without {binary}; see {log}")


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def _run(cmd: list[str], log: Path) -> None:
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"`{' '.join(cmd[:3])} ...` failed (exit {proc.returncode}): {tail[0]} (log: {log})")


if __name__ == "__main__":
    print(build())
