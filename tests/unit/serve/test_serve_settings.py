"""Settings as the CLI will build them, the load tool's arithmetic, and API-key checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from llmforge.serve.loadtest import Sample, _report
from llmforge.serve.middleware import ApiKeyAuth
from llmforge.serve.settings import ServeSettings


def test_models_are_served_under_their_reference_unless_named() -> None:
    assert ServeSettings.for_models(["demo"]).models == {"demo": "demo"}
    s = ServeSettings.for_models(["runs/a", "runs/b"], ["base"], port=9000, api_keys=["k"])
    assert s.models == {"base": "runs/a", "runs/b": "runs/b"} and s.port == 9000 and s.default_model == "base"
    with pytest.raises(ValueError):
        ServeSettings.for_models(["a", "b"], ["x", "x"])
    with pytest.raises(ValidationError):
        ServeSettings(models={})
    with pytest.raises(ValidationError):
        ServeSettings(max_concurrency=0)
    defaults = ServeSettings()
    assert defaults.cors_origins == [] and defaults.api_keys == [] and defaults.public_paths == ["/", "/health"]


def test_loadtest_report_counts_errors_and_times_tokens() -> None:
    ok = Sample("200", e2e=1.0, ttft=0.2, tokens=5, token_times=[0.2, 0.4, 0.6, 0.8, 1.0])
    report = _report([ok, ok, Sample("429", 0.01), Sample("timeout", 5.0)], duration=2.0)
    assert report["completed"] == 2 and report["errors"] == {"429": 1, "timeout": 1}
    assert report["output_tokens_per_s"] == pytest.approx(5.0) and report["requests_per_s"] == pytest.approx(1.0)
    assert report["tpot_s"]["p50"] == pytest.approx(0.2) and report["itl_s"]["p99"] == pytest.approx(0.2)
    assert report["ttft_s"]["p95"] == pytest.approx(0.2) and report["e2e_s"]["mean"] == pytest.approx(1.0)


def test_api_keys_need_bearer_and_an_exact_match() -> None:
    auth = ApiKeyAuth(app=None, keys=["alpha", "beta"], public_paths=[])  # type: ignore[arg-type]
    assert auth._allowed("Bearer alpha") and auth._allowed("bearer beta")
    for header in ("", "Bearer", "Bearer alph", "Bearer alphaa", "Basic alpha", "alpha"):
        assert not auth._allowed(header)


def test_chat_template_replaces_the_tokenizers_own_in_the_rendered_prompt(tiny_tokenizer, tmp_path) -> None:
    import copy
    import time

    import pytest
    from fastapi.testclient import TestClient

    from llmforge.errors import LlmforgeError
    from llmforge.serve.app import create_app
    from llmforge.serve.settings import ServeSettings
    from tests.unit.serve.conftest import FakeBackend

    with pytest.raises((LlmforgeError, ValueError), match="neither a known name"):
        ServeSettings(models={"m": "demo"}, chat_template=str(tmp_path / "missing.jinja"))
    backend = FakeBackend(copy.deepcopy(tiny_tokenizer), max_model_len=256)
    settings = ServeSettings(models={"fake": "fake"}, device="cpu", warmup=False, chat_template="user-assistant")
    app = create_app(settings, loader=lambda ref, opts, kind: backend)
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        reply = client.post("/v1/chat/completions", json={"model": "fake", "max_tokens": 2, "temperature": 0,
                                                          "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200, reply.text
    rendered = backend.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                     add_generation_prompt=True)
    assert rendered == "User: hi\nAssistant: " and reply.json()["usage"]["prompt_tokens"] == len(
        backend.tokenizer(rendered, add_special_tokens=False)["input_ids"])
