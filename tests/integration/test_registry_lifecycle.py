"""Issue #17's acceptance test, end to end on the tiny model: a registry in tmp, two versions, the production alias
served by a real uvicorn server, an 80/20 A/B split, promote and rollback under flowing traffic (0 failed requests,
reloads via /admin/reload), a tampered file that verify names, and `llmforge retrain` refused by one gate and promoted
by another (the second through the real CLI, as a scheduler runs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import qa_records, write_jsonl
from tests.integration.serve.conftest import API_KEY, LiveServer

pytest.importorskip("mlflow", reason="the registry needs the 'registry' extra")
scipy_stats = pytest.importorskip("scipy.stats", reason="the A/B check uses scipy (the serve extra)")

NAME = "demo"


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The registry (and llmforge's home) in tmp, for this process and the CLI it starts."""
    monkeypatch.setenv("LLMFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLMFORGE_REGISTRY_URI", f"sqlite:///{tmp_path / 'registry' / 'mlflow.db'}")
    return tmp_path


def _pipeline(tmp_path: Path, model: Path, old: Path, gate: dict[str, Any]) -> dict[str, Any]:
    return {"output_dir": str(tmp_path / "runs"), "model": {"name_or_path": str(model)},
            "data": {"path": [str(old)], "split": {"validation": 0.1, "test": 0.1}},
            "train": {"method": "full", "max_steps": 6, "learning_rate": 1e-3, "batch_size": 8},
            "eval": {"batch_size": 16},
            "export": {"formats": ["onnx"], "parity_prompts": 2, "parity_tokens": 4},
            "retrain": {"registry": NAME, "from": "production", "old_data_fraction": 0.5, "gate": gate}}


class Traffic:
    """Clients sending to `model` until stopped; every status is kept (a failed request is any non-200)."""

    def __init__(self, live: LiveServer, model: str, clients: int = 4) -> None:
        self.live, self.model, self.statuses = live, model, []
        self.stop_event, self.lock = threading.Event(), threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.live.url, headers=self.live.headers, timeout=60) as http:
            while not self.stop_event.is_set():
                r = http.post("/v1/completions", json={"model": self.model, "prompt": "reverse: alpha beta",
                                                        "max_tokens": 2})
                with self.lock:
                    self.statuses.append(r.status_code)

    def count(self) -> int:
        with self.lock:
            return len(self.statuses)

    def wait_for(self, more: int) -> None:
        target = self.count() + more
        while self.count() < target:
            assert all(t.is_alive() for t in self.threads), "a client died"
            self.stop_event.wait(0.01)

    def stop(self) -> list[int]:
        self.stop_event.set()
        for t in self.threads:
            t.join(60)
        return self.statuses


def _served_path(live: LiveServer, name: str, variant: str = "") -> str:
    found = [m for m in live.http.get("/model_info").json()["models"] if m["name"] == name and m["variant"] == variant]
    assert len(found) == 1, found
    return found[0]["path"]


def _reload_under_traffic(live: LiveServer, move: Any, client: bool = False) -> list[int]:
    """Move the alias and reload while 4 clients send; the statuses of every request sent meanwhile. `client`:
    reload through `registry.reload_servers` (what `--reload URL` of promote/rollback/retrain runs)."""
    from llmforge import registry

    traffic = Traffic(live, NAME)
    try:
        traffic.wait_for(20)  # requests are flowing before the alias moves
        move()
        if client:
            outcome, = registry.reload_servers([live.url], API_KEY)
            assert outcome.ok, outcome.detail
        else:
            r = live.http.post("/admin/reload", json={})  # empty: every reference resolved again, as SIGHUP does
            assert r.status_code == 200, r.text
        traffic.wait_for(20)  # and still after the swap
    finally:
        statuses = traffic.stop()
    return statuses


def test_registry_serving_rollout_and_gated_retrain(tiny_model_dir: Path, home: Path) -> None:
    from llmforge import registry
    from llmforge.prepare.runner import prepare
    from llmforge.retrain import retrain
    from llmforge.stages import Stages, load_config
    from llmforge.train.runner import train

    records = qa_records(200)
    old, new = write_jsonl(home / "old.jsonl", records[:120]), write_jsonl(home / "new.jsonl", records[120:])
    config = home / "retrain.yaml"
    config.write_text(yaml.safe_dump(_pipeline(home, tiny_model_dir, old, {"min_perplexity_improvement_pct": 99})))
    cfg = load_config(config)
    stages = Stages(cfg)
    prepare(stages.prepare())
    # Two versions: 6 and 12 steps from the same base, so their weights (and served paths) differ.
    v1 = registry.register(train(stages.train(output=home / "runs" / "v1")).output_dir, NAME)
    v2_train = stages.train(output=home / "runs" / "v2")
    v2 = registry.register(train(v2_train.model_copy(update={"train": cfg.train.model_copy(
        update={"max_steps": 12})})).output_dir, NAME)
    registry.promote(NAME, v1.version, reason="first release")
    paths = {v.version: str(v.run_dir / "model") for v in (v1, v2)}

    from llmforge.serve.settings import ServeSettings

    settings = ServeSettings.model_validate({
        "models": {NAME: f"registry:{NAME}@production"},
        "ab": {"chat": {"variants": {"v1": {"model": v1.ref, "weight": 0.8}, "v2": {"model": v2.ref, "weight": 0.2}}}},
        "api_keys": [API_KEY], "device": "cpu", "port": 0, "max_concurrency": 8})
    live = LiveServer(settings)
    try:
        assert _served_path(live, NAME) == paths[1]
        assert (_served_path(live, "chat", "v1"), _served_path(live, "chat", "v2")) == (paths[1], paths[2])

        # A/B 80/20 over 200 sessions: the observed split, and the same counts per variant in /metrics.
        def send(i: int) -> str:
            r = live.http.post("/v1/completions", headers={"X-LLMforge-Session": f"user-{i}"},
                               json={"model": "chat", "prompt": "reverse: beta", "max_tokens": 1})
            assert r.status_code == 200, r.text
            return r.headers["x-llmforge-variant"]

        with ThreadPoolExecutor(8) as pool:
            variants = list(pool.map(send, range(200)))
        n_v1 = variants.count("v1")
        assert n_v1 + variants.count("v2") == 200
        assert scipy_stats.binomtest(n_v1, 200, 0.8).pvalue > 0.01, n_v1
        served = {}
        for line in live.http.get("/metrics").text.splitlines():
            if line.startswith("vllm:request_success_total{") and 'model_name="chat"' in line:
                variant = line.split('variant="')[1].split('"')[0]
                served[variant] = served.get(variant, 0) + float(line.rsplit(" ", 1)[1])
        assert served == {"v1": n_v1, "v2": 200 - n_v1}

        # Promote v2 while requests flow, reload: none fails, production serves v2; rollback the same way.
        statuses = _reload_under_traffic(live, lambda: registry.promote(NAME, v2.version, reason="A/B winner"))
        assert statuses and set(statuses) == {200}, statuses
        assert _served_path(live, NAME) == paths[2]
        statuses = _reload_under_traffic(live, lambda: registry.rollback(NAME, reason="roll back"), client=True)
        assert statuses and set(statuses) == {200}, statuses
        assert _served_path(live, NAME) == paths[1]
    finally:
        live.stop()

    # A tampered file: verify fails and names it; the alias cannot be moved onto it.
    weights = v2.run_dir / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    checked = registry.verify(NAME, v2.version)
    assert not checked.ok and checked.drift.changed == ("model/model.safetensors",)
    assert "changed: model/model.safetensors" in checked.drift.describe()
    with pytest.raises(registry.IntegrityError, match="model/model.safetensors"):
        registry.promote(NAME, v2.version)

    # Retrain with a gate that cannot pass (99% lower perplexity): registered, refused, production stays v1.
    refused = retrain(cfg, [str(new)], output=home / "runs" / "retrain-1")
    assert refused.metrics["promoted"] is False
    assert refused.metrics["gate"]["failed"] == ["min_perplexity_improvement_pct"]
    assert registry.version_info(NAME, "production").version == v1.version
    last = registry.model_info(NAME).decisions[-1]
    assert (last.action, last.version, last.previous) == ("refuse", 3, v1.version)
    assert "min_perplexity_improvement_pct" in last.reason
    on_disk = json.loads((refused.output_dir / "metrics.json").read_text())
    assert on_disk["decision"]["action"] == "refuse" and on_disk["candidate"]["ref"] == f"registry:{NAME}@3"
    assert on_disk["candidate"]["tokens"] == on_disk["production"]["tokens"]  # the same held-out set

    # The same command a CronJob runs, with a gate the candidate passes (and its ONNX export's parity): promoted.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "llmforge.cli", "retrain", str(config), "--data", str(new),
         "--output", str(home / "runs" / "retrain-2"), "--set", "retrain.gate.min_perplexity_improvement_pct=1",
         "--set", "retrain.gate.export_fidelity=true"],
        capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "promoted: demo production -> version 4 (was 1)" in out.stdout
    passed = json.loads((home / "runs" / "retrain-2" / "decision" / "metrics.json").read_text())
    assert passed["promoted"] is True and passed["gate"]["passed"] is True
    assert [line["line"] for line in passed["gate"]["lines"]] == ["min_perplexity_improvement_pct", "export_fidelity"]
    assert passed["candidate"]["perplexity"] < 0.99 * passed["production"]["perplexity"]
    assert registry.version_info(NAME, "production").version == 4
    last = registry.model_info(NAME).decisions[-1]
    assert (last.action, last.alias, last.version, last.previous) == ("promote", "production", 4, v1.version)
    assert "retrain gate passed" in last.reason
