"""Real servers for the serving tests: uvicorn on a free port, in a background thread of the test process.

The same `create_app` the CLI serves, over real sockets, driven by the official `openai` client. A
`SlowBackend` (a real transformers backend that sleeps at each decode step) makes generations long enough
to observe overload, cancellation and timeouts without timing-sensitive assertions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
import uvicorn

from llmforge.serve.app import create_app
from llmforge.serve.backends import load_backend
from llmforge.serve.settings import ServeSettings

API_KEY = "test-key"
STARTUP_TIMEOUT_S = 60


class SlowBackend:
    """A real backend whose decode steps take at least `delay` seconds."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def decode(self, state: Any, tokens: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return self.inner.decode(state, tokens)


def slow_loader(delay: float) -> Any:
    return lambda ref, opts, backend: SlowBackend(load_backend(ref, opts, backend), delay)


class LiveServer:
    def __init__(self, settings: ServeSettings, loader: Any = None, wait_ready: bool = True) -> None:
        self.settings = settings
        self.app = create_app(settings, loader=loader)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        key = settings.api_keys[0] if settings.api_keys else None
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.url, headers=self.headers, timeout=60)
        if wait_ready:
            self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while self.http.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, f"not ready: {self.http.get('/ready').text}"
            time.sleep(0.05)

    def client(self, **kw: Any) -> openai.OpenAI:
        kw.setdefault("api_key", API_KEY)
        return openai.OpenAI(base_url=self.url + "/v1", max_retries=0, timeout=60, **kw)

    def metric(self, name: str) -> float:
        """Sum of a metric's samples over all label sets, from /metrics."""
        total = 0.0
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def make_server(tiny_model_dir: Path) -> Iterator[Any]:
    """Start servers on the tiny model; they stop after the module, and torch's thread count is restored
    (a server sets it process-wide; other tests in the session should not inherit it)."""
    threads = torch.get_num_threads()
    servers: list[LiveServer] = []

    def make(loader: Any = None, wait_ready: bool = True, **overrides: Any) -> LiveServer:
        fields: dict[str, Any] = {"models": {"tiny": str(tiny_model_dir)}, "api_keys": [API_KEY], "port": 0,
                                  "device": "cpu", **overrides}
        servers.append(LiveServer(ServeSettings(**fields), loader, wait_ready))
        return servers[-1]

    yield make
    for s in servers:
        s.stop()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def server(make_server: Any) -> LiveServer:
    """The shared server: default limits."""
    return make_server()
