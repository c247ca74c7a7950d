"""A served model, end to end, as a client sees it: start `llmforge serve` in its own process, wait for /ready,
ask with the official `openai` client, measure request latency, then SIGTERM and check the clean exit."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from llmforge.errors import LlmforgeError, require


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, key: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LlmforgeError(f"the server exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/ready", headers={"Authorization": f"Bearer {key}"}, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise LlmforgeError(f"the server at {url} was not ready within {timeout:.0f} s")


def serve_check(model: str | Path, prompt: str, max_tokens: int = 32, requests: int = 10,
                timeout: float = 120.0, log: Path | None = None, reply_tokens: int = 256) -> dict[str, Any]:
    """The reply to `prompt` (up to `reply_tokens`), the same reply streamed, p50 latency of `requests` sequential
    `max_tokens`-token replies, clean exit."""
    require("openai", "serve")
    from openai import OpenAI

    port, key = free_port(), os.urandom(16).hex()
    url = f"http://127.0.0.1:{port}"
    if log is None:  # the log is the evidence of a clean drain: keep one even when the caller does not ask
        log = Path(tempfile.mkdtemp(prefix="llmforge-serve-check-")) / "serve.log"
    out = open(log, "wb")  # noqa: SIM115 - closed below
    env = {**os.environ, "LLMFORGE_API_KEY": key}
    proc = subprocess.Popen([sys.executable, "-m", "llmforge.cli", "serve", str(model), "--port", str(port),
                             "--served-model-name", "demo"], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_ready(url, key, proc, timeout)
        client = OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        reply = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": prompt}],
                                               max_tokens=reply_tokens, temperature=0)
        stream = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": prompt}],
                                                max_tokens=reply_tokens, temperature=0, stream=True)
        chunks = [c for c in stream if c.choices]
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
        latencies = []
        for _ in range(requests):
            start = time.perf_counter()
            client.chat.completions.create(model="demo", messages=[{"role": "user", "content": prompt}],
                                           max_tokens=max_tokens, temperature=0, extra_body={"ignore_eos": True})
            latencies.append(time.perf_counter() - start)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()
    return {"prompt": prompt, "reply": reply.choices[0].message.content, "usage": reply.usage.model_dump(),
            "finish_reason": reply.choices[0].finish_reason, "streamed_reply": streamed,
            "streamed_finish_reason": next((c.choices[0].finish_reason for c in reversed(chunks)
                                            if c.choices[0].finish_reason), None),
            "p50_latency_ms": statistics.median(latencies) * 1e3, "latency_requests": requests,
            "latency_tokens": max_tokens, "exit_code": code,
            # uvicorn re-raises SIGTERM once its graceful shutdown has completed, so -SIGTERM is a clean exit too
            "clean_shutdown": code in (0, -signal.SIGTERM) and _drained(log)}


def _drained(log: Path | None) -> bool:
    """The server's own log says the application shut down. No log is no evidence: not drained."""
    if log is None or not Path(log).is_file():
        return False
    return "Application shutdown complete" in Path(log).read_text(encoding="utf-8", errors="replace")
