"""The OpenAI API as the official client uses it, against a real server on the tiny model."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

pytestmark = pytest.mark.integration

CHAT = [{"role": "user", "content": "Write a function that adds two numbers."}]
PROMPTS = ["def add(a, b):", "class Stack:", "import os\n", "for i in range(10):", "x = [", "# a comment"]


def test_models_and_response_shapes(server: Any) -> None:
    client = server.client()
    assert [m.id for m in client.models.list()] == ["tiny"]
    chat = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8, temperature=0)
    assert chat.id.startswith("chatcmpl-") and chat.object == "chat.completion" and chat.model == "tiny"
    choice = chat.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    assert 1 <= chat.usage.completion_tokens <= 8
    text = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=5, temperature=0,
                                     extra_body={"ignore_eos": True})
    assert text.object == "text_completion" and text.choices[0].finish_reason == "length"
    assert text.usage.completion_tokens == 5


@pytest.mark.parametrize("kind", ["chat", "completions"])
def test_streamed_text_equals_non_streamed_text_with_usage(server: Any, kind: str) -> None:
    client = server.client()
    args: dict[str, Any] = {"model": "tiny", "max_tokens": 24, "temperature": 0, "n": 2}
    if kind == "chat":
        create, args["messages"] = client.chat.completions.create, CHAT
    else:
        create, args["prompt"] = client.completions.create, PROMPTS[1]
    whole = create(**args)
    chunks = list(create(**args, stream=True, stream_options={"include_usage": True}))
    texts = ["", ""]
    finish: dict[int, str] = {}
    for chunk in chunks[:-1]:
        assert chunk.usage is None
        for c in chunk.choices:
            texts[c.index] += (c.delta.content or "") if kind == "chat" else c.text
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.model_dump() == whole.usage.model_dump()
    expected = [c.message.content if kind == "chat" else c.text for c in whole.choices]
    assert texts == expected and texts[0] == texts[1]  # n=2 at temperature 0: the same text twice
    assert finish == {c.index: c.finish_reason for c in whole.choices}


def test_stream_ends_with_done(server: Any) -> None:
    body = {"model": "tiny", "messages": CHAT, "max_tokens": 3, "stream": True}
    with server.http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["choices"][0]["delta"]["role"] == "assistant"


def test_stop_sequences_cut_before_the_stop(server: Any) -> None:
    client = server.client()
    args = {"model": "tiny", "prompt": PROMPTS[0], "max_tokens": 32, "temperature": 0,
            "extra_body": {"ignore_eos": True}}
    full = client.completions.create(**args).choices[0].text
    stop = full[len(full) // 2]
    cut = client.completions.create(**args, stop=[stop, "never-there"]).choices[0]
    assert cut.finish_reason == "stop" and cut.text == full[:full.index(stop)]
    streamed = "".join(c.choices[0].text for c in client.completions.create(**args, stop=stop, stream=True)
                       if c.choices)
    assert streamed == cut.text


def test_n_seed_limits_and_logprobs(server: Any) -> None:
    client = server.client()
    sampled = [client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12, temperature=1.0,
                                              seed=5, n=3) for _ in range(2)]
    assert [c.message.content for c in sampled[0].choices] == [c.message.content for c in sampled[1].choices]
    assert [c.index for c in sampled[0].choices] == [0, 1, 2]
    assert 3 <= sampled[0].usage.completion_tokens <= 36
    limited = client.chat.completions.create(model="tiny", messages=CHAT, max_completion_tokens=3,
                                             logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True})
    assert limited.usage.completion_tokens == 3 and limited.choices[0].finish_reason == "length"
    content = limited.choices[0].logprobs.content
    assert len(content) == 3 and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    text = client.completions.create(model="tiny", prompt=PROMPTS[2], max_tokens=4, logprobs=3, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0]
    assert len(text.logprobs.tokens) == 4 and len(text.logprobs.top_logprobs[0]) == 3
    assert text.logprobs.text_offset[0] == 0
    plain = dict(model="tiny", prompt=PROMPTS[0], max_tokens=16, temperature=0, extra_body={"ignore_eos": True})
    repeated = client.completions.create(**plain).choices[0].text
    assert client.completions.create(**plain, frequency_penalty=2.0).choices[0].text != repeated


def test_greedy_alone_equals_concurrent(server: Any) -> None:
    client = server.client()

    def ask(prompt: str) -> str:
        return client.completions.create(model="tiny", prompt=prompt, max_tokens=20, temperature=0,
                                         extra_body={"ignore_eos": True}).choices[0].text
    alone = [ask(p) for p in PROMPTS]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(ask, PROMPTS))
    assert together == alone


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_every_error_is_openai_shaped(server: Any) -> None:
    client = server.client()
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="tiny", messages=CHAT, temperature=5)
    assert _error(bad.value)["param"] == "temperature"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=CHAT)
    assert _error(missing.value)["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as long:
        client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=10_000)
    assert _error(long.value)["code"] == "context_length_exceeded"
    assert "maximum context length is 256" in _error(long.value)["message"]
    with pytest.raises(openai.BadRequestError, match="not supported"):  # a field the server does not implement
        client.chat.completions.create(model="tiny", messages=CHAT,
                                       prediction={"type": "content", "content": "Paris"})
    for status, response in [
        (400, server.http.post("/v1/chat/completions", content=b"{not json",
                               headers={"Content-Type": "application/json"})),
        (400, server.http.post("/v1/completions", json={"model": "tiny", "prompt": [10_000_000]})),
        (413, server.http.post("/v1/completions", json={"model": "tiny", "prompt": "x" * (2 << 20)})),
        (404, server.http.get("/v2/nothing")),
        (405, server.http.get("/v1/chat/completions")),
    ]:
        assert response.status_code == status, response.text
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_api_keys_on_every_route_but_liveness(server: Any) -> None:
    import httpx

    anonymous = httpx.Client(base_url=server.url, timeout=30)
    for path in ("/", "/health"):
        assert anonymous.get(path).status_code == 200
    for path in ("/ready", "/metrics", "/model_info", "/v1/models"):
        r = anonymous.get(path)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert anonymous.get("/v1/models", headers={"Authorization": "Bearer test-key-but-longer"}).status_code == 401
    assert anonymous.get("/v1/models", headers={"Authorization": "Basic test-key"}).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong").models.list()
    anonymous.close()


def test_ops_routes_request_ids_and_access_log(server: Any, caplog: pytest.LogCaptureFixture) -> None:
    health = server.http.get("/health").json()
    assert health["status"] == "ok" and health["model_loaded"] is True
    assert {"cpu_percent", "memory", "uptime_s"} <= set(health)
    assert server.http.get("/ready").json()["status"] == "ready"
    info = server.http.get("/model_info").json()["models"][0]
    assert info["name"] == "tiny" and info["backend"] == "transformers" and info["max_model_len"] == 256
    with caplog.at_level(logging.INFO, logger="llmforge.serve.access"):
        r = server.http.post("/v1/chat/completions", json={"model": "tiny", "messages": CHAT, "max_tokens": 2},
                             headers={"X-Request-Id": "trace-123"})
        assert r.headers["x-request-id"] == "trace-123" and r.json()["id"] == "chatcmpl-trace-123"
        assert len(server.http.get("/health").headers["x-request-id"]) == 32
    lines = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "llmforge.serve.access"]
    mine = next(line for line in lines if line["request_id"] == "trace-123")
    assert mine["status"] == 200 and mine["path"] == "/v1/chat/completions" and mine["model"] == "tiny"
    metrics = server.http.get("/metrics").text
    for name in ("vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
                 "vllm:e2e_request_latency_seconds_bucket", "vllm:num_requests_running",
                 "vllm:num_requests_waiting", "vllm:prompt_tokens_total", "vllm:generation_tokens_total"):
        assert name in metrics
    assert server.metric("vllm:generation_tokens_total") > 0


def test_loadtest_drives_the_server(server: Any) -> None:
    from llmforge.serve.loadtest import loadtest

    report = loadtest(server.url, requests=6, concurrency=3, max_tokens=4, api_key="test-key")
    assert report["completed"] == 6 and report["errors"] == {} and report["output_tokens"] == 24
    assert report["ttft_s"]["p50"] > 0 and report["e2e_s"]["p99"] >= report["e2e_s"]["p50"]
    refused = loadtest(server.url, requests=2, concurrency=2, max_tokens=2, api_key="wrong", model="tiny")
    assert refused["completed"] == 0 and refused["errors"] == {"401": 2}


def test_simple_chat_and_batch_chat(server: Any) -> None:
    one = server.http.post("/chat", json={"message": "hello", "max_length": 4, "temperature": 0})
    assert one.status_code == 200, one.text
    assert set(one.json()) >= {"response", "usage", "finish_reason", "latency_ms"}
    assert one.json()["usage"]["completion_tokens"] <= 4
    batch = server.http.post("/batch_chat", json={"messages": ["hi", "def f"], "max_tokens": 3})
    assert batch.status_code == 200 and len(batch.json()["responses"]) == 2
    too_many = server.http.post("/batch_chat", json={"messages": ["x"] * 9})
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "messages"


def test_cors_is_closed_by_default_and_opens_only_to_listed_origins(server: Any, make_server: Any) -> None:
    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in server.http.options("/v1/models", headers=preflight).headers
    opened = make_server(cors_origins=["http://app.example"])
    ok = opened.http.options("/v1/models", headers={**preflight, "Origin": "http://app.example"})
    assert ok.headers["access-control-allow-origin"] == "http://app.example"
    evil = opened.http.options("/v1/models", headers=preflight)
    assert "access-control-allow-origin" not in evil.headers


def test_models_and_lora_adapters_side_by_side(make_server: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(str(tmp_path / "adapter"))  # adapter_config.json names the base model dir
    s = make_server(models={"base": str(tiny_model_dir), "tuned": str(tmp_path / "adapter")})
    client = s.client()
    assert [m.id for m in client.models.list()] == ["base", "tuned"]
    answers = {name: client.completions.create(model=name, prompt=PROMPTS[0], max_tokens=4, temperature=0,
                                               logprobs=1, extra_body={"ignore_eos": True}).choices[0]
               for name in ("base", "tuned")}
    # The adapter changes the model's distribution: the same request scores differently under it.
    assert answers["base"].logprobs.token_logprobs != answers["tuned"].logprobs.token_logprobs
    info = {m["name"]: m for m in s.http.get("/model_info").json()["models"]}
    assert info["tuned"]["adapter"] == str(tmp_path / "adapter") and info["base"]["adapter"] is None
