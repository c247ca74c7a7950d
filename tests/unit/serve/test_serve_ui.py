"""The playground's server side on the fake backend: /tokenize and /detokenize (vLLM's), the page and its keys,
and the run-directory routes (listing, one run, its files; nothing outside the configured roots)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from llmforge.artifacts import RunDir
from llmforge.serve.app import create_app
from llmforge.serve.settings import ServeSettings
from llmforge.serve.ui.runs import RunNotFound, RunRoots, list_runs, run_detail, run_file
from tests.unit.serve.conftest import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def make_run(path: Path, kind: str = "model", metrics: dict[str, Any] | None = None) -> Path:
    with RunDir(path, kind=kind, command="train", config={}) as run:
        run.file("loss_curve.png").write_bytes(b"\x89PNG fake")
        run.file("lint.json").write_text(json.dumps({"records": 3}))
        run.file("model/config.json").write_text("{}")  # weights' folder: never listed as a report
        run.finish(metrics or {"train_loss": 1.5})
    return path


@pytest.fixture()
def runs_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    make_run(root / "demo" / "train", metrics={"train_loss": 1.25, "train_steps": 4})
    make_run(root / "solo", kind="eval")
    (root / "demo" / "crashed.partial").mkdir(parents=True)
    (tmp_path / "secret.json").write_text('{"key": "x"}')
    return root


@pytest.fixture()
def ui_client(fake_backend: Any, runs_root: Path) -> Iterator[TestClient]:
    settings = ServeSettings(models={"fake": "fake"}, api_keys=[API_KEY], device="cpu", warmup=False, ui=True,
                             ui_runs=[runs_root])
    app = create_app(settings, loader=lambda ref, opts, backend: fake_backend)
    threads = torch.get_num_threads()
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while client.get("/ready", headers=AUTH).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield client
    torch.set_num_threads(threads)


def test_tokenize_renders_chat_as_a_chat_request_does(fake_client: TestClient, tiny_tokenizer: Any) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    got = fake_client.post("/tokenize", json={"model": "fake", "messages": messages, "return_token_strs": True})
    assert got.status_code == 200, got.text
    body = got.json()
    reply = fake_client.post("/v1/chat/completions", json={"model": "fake", "messages": messages, "max_tokens": 1})
    assert body["count"] == len(body["tokens"]) == reply.json()["usage"]["prompt_tokens"]
    assert body["max_model_len"] == 256 and len(body["token_strs"]) == body["count"]
    text = fake_client.post("/detokenize", json={"model": "fake", "tokens": body["tokens"]}).json()["prompt"]
    assert "Be brief." in text and "Hi there" in text
    assert tiny_tokenizer(text, add_special_tokens=False)["input_ids"] == body["tokens"]


def test_tokenize_plain_prompt_and_errors(fake_client: TestClient, tiny_tokenizer: Any) -> None:
    plain = fake_client.post("/tokenize", json={"prompt": "hello world"}).json()  # model: the default
    assert plain["tokens"] == tiny_tokenizer("hello world")["input_ids"]
    bare = fake_client.post("/tokenize", json={"prompt": "hello world", "add_special_tokens": False}).json()
    assert bare["tokens"] == tiny_tokenizer("hello world", add_special_tokens=False)["input_ids"]
    both = fake_client.post("/tokenize", json={"prompt": "x", "messages": [{"role": "user", "content": "x"}]})
    assert both.status_code == 400
    far = fake_client.post("/detokenize", json={"tokens": [len(tiny_tokenizer) + 5]})
    assert far.status_code == 400 and far.json()["error"]["param"] == "tokens"
    unknown = fake_client.post("/tokenize", json={"model": "nope", "prompt": "x"})
    assert unknown.status_code == 404


def test_page_loads_without_a_key_and_data_needs_one(ui_client: TestClient) -> None:
    page = ui_client.get("/ui/")
    assert page.status_code == 200 and 'content="required"' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in csp and "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp
    assert ui_client.get("/ui", follow_redirects=False).headers["location"] == "/ui/"
    for asset in ("app.js", "style.css", "vendor/preact.mjs", "vendor/hooks.mjs", "vendor/htm.mjs",
                  "vendor/diff.min.js"):
        assert ui_client.get(f"/ui/static/{asset}").status_code == 200, asset
    # every asset the page names is served by this server: no CDN
    for ref in ("/ui/static/style.css", "/ui/static/vendor/diff.min.js", "/ui/static/app.js"):
        assert ref in page.text
    assert "http" not in page.text.replace('http-equiv', '')
    for route in ("/ui/api/runs", "/ui/api/overview", "/ui/api/registry", "/ui/api/run?id=0/solo"):
        assert ui_client.get(route).status_code == 401, route
        assert ui_client.get(route, headers={"Authorization": "Bearer wrong"}).status_code == 401, route


def test_without_ui_there_is_no_page(fake_client: TestClient) -> None:
    assert fake_client.get("/ui/").status_code == 404
    assert fake_client.get("/ui/static/app.js").status_code == 404


def test_runs_are_listed_and_read_from_their_directories(ui_client: TestClient, runs_root: Path) -> None:
    listed = ui_client.get("/ui/api/runs", headers=AUTH).json()
    by_name = {r["name"]: r for r in listed["runs"]}
    assert set(by_name) == {"demo/train", "solo", "demo/crashed.partial"}
    assert by_name["demo/crashed.partial"]["id"] is None and by_name["demo/crashed.partial"]["partial"]
    run = ui_client.get("/ui/api/run", params={"id": by_name["demo/train"]["id"]}, headers=AUTH).json()
    assert run["metrics"] == {"train_loss": 1.25, "train_steps": 4}
    assert run["images"] == ["loss_curve.png"] and run["reports"] == {"lint.json": {"records": 3}}
    assert "files" not in run["manifest"] and "model/config.json" in run["files"]
    png = ui_client.get("/ui/api/file", params={"run": run["id"], "name": "loss_curve.png"}, headers=AUTH)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content == (runs_root / "demo" / "train" / "loss_curve.png").read_bytes()


@pytest.mark.parametrize("run_id, name", [
    ("0/demo/train", "../../../secret.json"), ("0/demo/train", "/etc/passwd"), ("0/../secret.json", "x"),
    ("0/demo/crashed.partial", "x.json"), ("1/solo", "metrics.json"), ("x/solo", "metrics.json"),
    ("0/demo/train", "model/../../../secret.json"), ("0/demo/train", "config.yaml.bak"),
])
def test_nothing_outside_a_run_is_served(ui_client: TestClient, run_id: str, name: str) -> None:
    got = ui_client.get("/ui/api/file", params={"run": run_id, "name": name}, headers=AUTH)
    assert got.status_code == 404 and got.json()["error"]["code"] in ("file_not_found",)


def test_run_reader_functions(runs_root: Path, tmp_path: Path) -> None:
    roots = RunRoots.of([runs_root, tmp_path / "absent"])
    assert [r["name"] for r in list_runs(roots) if r["id"]] == ["solo", "demo/train"]  # newest first
    with pytest.raises(RunNotFound, match="no finished run directory"):
        run_detail(roots, "0/demo")
    path, media = run_file(roots, "0/solo", "lint.json")
    assert path.name == "lint.json" and media == "application/json"


def test_overview_and_registry_answer_without_a_registry(ui_client: TestClient, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMFORGE_REGISTRY_URI", f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}")
    reg = ui_client.get("/ui/api/registry", headers=AUTH).json()
    assert reg in ({"available": True, "uri": f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}", "models": []},
                   {"available": False, "message": "the registry needs the extra: pip install 'llmforge[registry]'"})
    assert not (tmp_path / "none").exists()  # looking created no store
    overview = ui_client.get("/ui/api/overview", headers=AUTH).json()
    assert overview["ab"] == {} and overview["ab_summary"] is None
