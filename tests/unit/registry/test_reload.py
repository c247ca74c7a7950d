"""`--reload URL` of promote / rollback / retrain: the POST /admin/reload a running server gets, against a stub server
on loopback that records what it was sent and answers as llmforge serve does."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmforge.cli import app
from llmforge.registry.reload import reload_endpoint, reload_servers

KEY = "reload-key"


class _Stub(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.path, self.headers.get("Authorization"), body))
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            status, payload = 401, {"error": {"message": "missing or invalid API key", "code": "invalid_api_key"}}
        else:
            status, payload = 200, {"reloaded": ["demo"], "draining": 1}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    _Stub.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_each_server_gets_an_empty_reload_with_the_key(server: str) -> None:
    outcomes = reload_servers([server, server + "/admin/reload"], KEY)
    assert [(o.ok, o.detail) for o in outcomes] == [(True, "reloaded demo")] * 2
    assert _Stub.seen == [("/admin/reload", f"Bearer {KEY}", b"{}")] * 2  # empty: every reference resolved again


def test_a_refusal_or_an_unreachable_server_is_reported_not_raised(server: str) -> None:
    refused, = reload_servers([server], "wrong")
    assert not refused.ok and refused.detail == "HTTP 401: missing or invalid API key"
    gone, = reload_servers(["http://127.0.0.1:9"], KEY, timeout=5)  # the discard port: nothing listens
    assert not gone.ok and gone.url == "http://127.0.0.1:9/admin/reload"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "127.0.0.1:8000", "ftp://host/x", "http://"])
def test_only_http_urls_are_reload_targets(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        reload_endpoint(url)


def test_promote_and_rollback_reload_the_servers_in_one_command(runs: tuple[Path, Path], name: str,
                                                                registry_uri: str, server: str) -> None:
    from llmforge import registry

    runner = CliRunner()
    env = {"LLMFORGE_REGISTRY_URI": registry_uri, "COLUMNS": "200", "LLMFORGE_API_KEY": KEY}
    for run in runs:
        registry.register(run, name, uri=registry_uri)
    result = runner.invoke(app, ["registry", "promote", f"{name}@1", "--reload", server], env=env)
    assert result.exit_code == 0, result.output
    assert f"{server}/admin/reload: reloaded demo" in result.output and len(_Stub.seen) == 1

    # A bad URL is refused before the alias moves.
    result = runner.invoke(app, ["registry", "promote", f"{name}@2", "--reload", "localhost:8000"], env=env)
    assert result.exit_code == 2 and registry.version_info(name, "production", registry_uri).version == 1

    # A server that refuses: the alias has moved, the command says which server did not reload and exits 1.
    result = runner.invoke(app, ["registry", "promote", f"{name}@2", "--reload", server, "--api-key", "wrong"],
                           env=env)
    assert result.exit_code == 1 and "NOT RELOADED" in result.output and "HTTP 401" in result.output
    assert registry.version_info(name, "production", registry_uri).version == 2

    result = runner.invoke(app, ["registry", "rollback", name, "--reload", server], env=env)
    assert result.exit_code == 0, result.output
    assert registry.version_info(name, "production", registry_uri).version == 1 and len(_Stub.seen) == 3
