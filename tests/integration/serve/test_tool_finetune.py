"""Tool calling end to end on a model llmforge fine-tuned to call a tool (issue #19), not a scripted backend: the
tiny model learns get_weather from OpenAI-style tool chats (`prepare` renders the calls and results through a
Hermes-style template, `train` learns the calls and answers but never the results), is served, and the official
openai client's whole flow runs on what it generates: the call parsed into `tool_calls`, the result sent back, an
answer that names the city. ~900 full fine-tuning steps of the 64-wide tiny model: the integration tier.

Measured on the 2-core EPYC: 8 of 8 calls named the asked city and 8 of 8 answers the city. The training ids are
drawn like the server's (`call_` + 24 hex): with sequential ids (call_0001...) the tiny model answered garbage after
a result carrying one of the server's ids it had never seen. The thresholds below leave room for another CPU's
float rounding to flip a greedy token; the temperature is not asserted (a 64-wide model does not copy numbers).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import openai
import pytest
import torch
from fastapi.testclient import TestClient

from llmforge.config import ModelConfig, TrainOptions
from llmforge.data.config import DataConfig
from llmforge.prepare.config import PrepareConfig
from llmforge.prepare.runner import prepare
from llmforge.serve.app import create_app
from llmforge.serve.settings import ServeSettings
from llmforge.train.config import TrainConfig
from llmforge.train.runner import train
from tests.helpers import write_jsonl
from tests.unit.serve.test_serve_tools import HERMES_TEMPLATE, WEATHER

pytestmark = pytest.mark.integration
CITIES = ("Paris", "Rome", "Oslo", "Lima", "Cairo", "Tokyo", "Berlin", "Madrid")


def tool_chats(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        city, temp = rng.choice(CITIES), rng.randint(-5, 35)
        cid = "call_" + "".join(rng.choice("0123456789abcdef") for _ in range(24))
        out.append({"tools": [WEATHER], "messages": [
            {"role": "user", "content": f"Weather in {city}?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": cid, "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}]},
            {"role": "tool", "tool_call_id": cid, "content": json.dumps({"temp_c": temp})},
            {"role": "assistant", "content": f"It is {temp} C in {city}."}]})
    return out


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmforge.models.tiny import build_model, train_tokenizer
    from tests.conftest import corpus

    root = tmp_path_factory.mktemp("tool-finetune")
    tokenizer = train_tokenizer(corpus(), vocab_size=512)
    tokenizer.chat_template = HERMES_TEMPLATE
    model = build_model(tokenizer, "test", seed=0)
    model.config.max_position_embeddings = 1024  # rotary: the tool chats are ~370 tokens, past the preset's 256
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    data = write_jsonl(root / "tools.jsonl", tool_chats(400))
    base = ModelConfig(name_or_path=str(root / "base"))
    prepared = prepare(PrepareConfig(model=base, data=DataConfig(path=[str(data)]), output_dir=root / "prep"))
    assert prepared.metrics["records_kept"] == 400
    options = TrainOptions(method="full", epochs=20, learning_rate=3e-3, precision="fp32", batch_size=8)
    return train(TrainConfig(model=base, data=root / "prep", train=options, output_dir=root / "tuned")).output_dir


@pytest.fixture(scope="module")
def client(tuned: Path) -> Any:
    threads = torch.get_num_threads()
    settings = ServeSettings(models={"tuned": str(tuned)}, api_keys=["k"], device="cpu", warmup=False)
    with TestClient(create_app(settings), headers={"Authorization": "Bearer k"}) as http:
        deadline = time.monotonic() + 120
        while http.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, http.get("/ready").text
            time.sleep(0.05)
        yield openai.OpenAI(base_url="http://testserver/v1", api_key="k", http_client=http, max_retries=0)
    torch.set_num_threads(threads)


def test_the_fine_tuned_model_calls_the_tool_and_answers_from_its_result(client: Any) -> None:
    right_calls, right_answers = 0, 0
    for city in CITIES:
        asked = [{"role": "user", "content": f"Weather in {city}?"}]
        first = client.chat.completions.create(model="tuned", messages=asked, tools=[WEATHER], temperature=0,
                                               max_tokens=120).choices[0]
        assert first.finish_reason == "tool_calls", first
        (call,) = first.message.tool_calls
        assert call.function.name == "get_weather" and call.id.startswith("call_")
        right_calls += json.loads(call.function.arguments) == {"city": city}
        result = [*asked, first.message, {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 17}'}]
        answer = client.chat.completions.create(model="tuned", messages=result, tools=[WEATHER], temperature=0,
                                                max_tokens=30).choices[0]
        assert answer.finish_reason == "stop" and not answer.message.tool_calls
        right_answers += answer.message.content.startswith("It is ") and answer.message.content.endswith(f" {city}.")
    assert right_calls >= 6 and right_answers >= 6, (right_calls, right_answers)


def test_streamed_call_is_the_non_streamed_one(client: Any) -> None:
    asked = [{"role": "user", "content": "Weather in Rome?"}]
    whole = client.chat.completions.create(model="tuned", messages=asked, tools=[WEATHER], temperature=0,
                                           max_tokens=120).choices[0].message.tool_calls[0]
    with client.chat.completions.stream(model="tuned", messages=asked, tools=[WEATHER], temperature=0,
                                        max_tokens=120) as stream:
        streamed = stream.get_final_completion().choices[0]
    assert streamed.finish_reason == "tool_calls"
    (call,) = streamed.message.tool_calls
    assert (call.function.name, call.function.arguments) == (whole.function.name, whole.function.arguments)
