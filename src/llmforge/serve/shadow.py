"""Shadow mode: a candidate model gets a copy of every request for an A/B-served name; its answers are logged
(shadow.jsonl), never returned, and it can neither slow nor fail the served answer.

Offering a copy is one `put_nowait` on a bounded queue, after the served request has been queued: when the queue
is full (the candidate is slower than the traffic) the copy is dropped and counted
(`llmforge:shadow_requests{outcome="dropped"}`). Workers on the event loop feed the candidate's own engine (its
own thread); whatever happens there (an exception, a timeout, a full engine) is logged and counted, never raised.
On a CPU the candidate still takes cores from the served model: shadow where there is headroom.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

from llmforge.serve.engine import AsyncResults, GenerationRequest, QueueFullError
from llmforge.serve.events import SHADOW_LOG, EventLog
from llmforge.serve.pool import ModelPool

log = logging.getLogger("llmforge.serve.shadow")


class Shadow:
    def __init__(self, pool: ModelPool, events: EventLog, counter: Any, maxsize: int, workers: int,
                 timeout_s: float) -> None:
        self.pool, self.events, self.counter = pool, events, counter  # counter: labels(model, outcome).inc()
        self.maxsize, self.workers, self.timeout_s = maxsize, workers, timeout_s
        self.queue: asyncio.Queue[tuple[str, list[GenerationRequest], str, float]] | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """On the event loop (the app's lifespan). Idle workers cost nothing; a reload may add a shadow later."""
        if self.tasks:
            return
        self.queue = asyncio.Queue(self.maxsize)
        self.tasks = [asyncio.create_task(self._work(), name=f"llmforge-shadow-{i}") for i in range(self.workers)]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []

    def offer(self, name: str, requests: Sequence[GenerationRequest], request_id: str) -> None:
        """A copy of a served request for `name`'s shadow, if it has one. Never blocks, never raises."""
        if self.queue is None or self.pool.shadow(name) is None:
            return
        try:
            self.queue.put_nowait((name, list(requests), request_id, time.monotonic()))
        except asyncio.QueueFull:
            self.counter.labels(name, "dropped").inc()

    async def _work(self) -> None:
        assert self.queue is not None
        while True:
            name, requests, rid, offered = await self.queue.get()
            try:
                await self._answer(name, requests, rid, offered)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop the worker (nor reach a client)
                log.exception("shadow request %s failed", rid)
                self.counter.labels(name, "failed").inc()

    async def _answer(self, name: str, requests: list[GenerationRequest], rid: str, offered: float) -> None:
        model = self.pool.shadow(name)  # looked up again: a reload may have replaced it meanwhile
        if model is None or model.engine is None:
            self.counter.labels(name, "dropped").inc()
            return
        copies = [dataclasses.replace(r, request_id=f"shadow-{r.request_id}", timeout_s=self.timeout_s)
                  for r in requests]
        record: dict[str, Any] = {"event": "shadow", "request_id": rid, "model": name, "ref": model.ref}
        start = time.monotonic()
        try:
            results = AsyncResults(model.engine, copies)
        except QueueFullError:
            self.counter.labels(name, "dropped").inc()
            return
        except Exception as exc:  # closed by a reload or a shutdown, or a prompt too long for the candidate
            outcome, record["error"] = "failed", f"{type(exc).__name__}: {exc}"
        else:
            try:
                done = await asyncio.wait_for(results.collect(), self.timeout_s)
            except TimeoutError:
                done = []
                outcome, record["error"] = "failed", f"no answer within {self.timeout_s:g} s"
            finally:
                results.cancel()
            if done:
                errors = [c.error or c.finish_reason for c in done if c.finish_reason in ("error", "timeout", "abort")]
                outcome = "failed" if errors else "completed"
                record |= {"texts": [c.text for c in done], "finish_reasons": [c.finish_reason for c in done],
                           "completion_tokens": sum(c.completion_tokens for c in done)}
                if errors:
                    record["error"] = str(errors[0])
        record |= {"outcome": outcome, "latency_s": round(time.monotonic() - start, 6),
                   "queued_s": round(start - offered, 6)}
        self.counter.labels(name, outcome).inc()
        self.events.write(SHADOW_LOG, record)
