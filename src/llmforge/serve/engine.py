"""The serving engine: a bounded queue and one worker thread doing continuous batching. No HTTP here.

Requests wait in a queue; between two decode steps the worker prefills the waiting ones (as one left-padded
batch) and joins them to the running batch, so a new request never waits for the others to finish. Every row
has its own sampling parameters, stop strings, eos handling and cancellation flag, checked at every step: a
cancelled or timed-out row leaves the batch at once and frees its slot. Results go to a per-request callback
(called from the worker thread); `AsyncResults` turns them into an async iterator for an event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from llmforge.errors import LlmforgeError
from llmforge.serve.backends.base import Backend
from llmforge.serve.detok import IncrementalText
from llmforge.serve.sampling import RowSampler, SamplingParams, TokenLogprob

log = logging.getLogger("llmforge.serve.engine")


class QueueFullError(LlmforgeError):
    """Every running slot and every queue place is taken; the caller should retry later."""


class EngineClosedError(LlmforgeError):
    """The engine is shutting down and takes no new requests."""


class ContextLengthError(LlmforgeError):
    def __init__(self, prompt_tokens: int, max_tokens: int, max_model_len: int) -> None:
        self.prompt_tokens, self.max_tokens, self.max_model_len = prompt_tokens, max_tokens, max_model_len
        super().__init__(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} for the completion). "
            "Please reduce the prompt or max_tokens."
        )


@dataclass(frozen=True)
class EngineConfig:
    max_batch: int = 16  # rows decoding together (the running slots)
    max_queue: int = 64  # requests waiting for a slot; beyond this, QueueFullError
    max_prefill_tokens: int = 8192  # padded prompt tokens prefilled in one step, so decoding rows are not starved


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams
    request_id: str = ""
    timeout_s: float | None = None  # counted from submission, queue time included


@dataclass(frozen=True)
class Output:
    """What one step produced for one request. The last one has `finish_reason` set."""

    index: int  # position of the request in its `submit` call
    text: str  # new text since the previous output
    token_ids: tuple[int, ...]
    logprobs: tuple[TokenLogprob, ...]
    finish_reason: str | None  # stop | length | abort | timeout | error
    prompt_tokens: int
    completion_tokens: int  # so far
    error: str | None = None


@dataclass
class RequestStats:
    request_id: str
    prompt_tokens: int
    arrival: float  # time.monotonic() at submission
    scheduled: float | None = None
    first_token: float | None = None
    finished: float | None = None
    token_times: list[float] = field(default_factory=list)
    finish_reason: str | None = None

    @property
    def completion_tokens(self) -> int:
        return len(self.token_times)


@dataclass
class Completion:
    """All outputs of one request folded together."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None

    def add(self, out: Output) -> None:
        self.text += out.text
        self.token_ids += out.token_ids
        self.logprobs += out.logprobs
        self.prompt_tokens, self.completion_tokens = out.prompt_tokens, out.completion_tokens
        self.finish_reason, self.error = out.finish_reason, out.error


class RequestHandle:
    def __init__(self) -> None:
        self.cancelled = False  # set by any thread, read by the worker at every step

    def cancel(self) -> None:
        self.cancelled = True


@dataclass(eq=False)
class _Seq:
    index: int
    request: GenerationRequest
    handle: RequestHandle
    callback: Callable[[Output], None]
    sampler: RowSampler
    text: IncrementalText
    stats: RequestStats
    deadline: float | None
    pending: int = -1  # the last sampled token, fed at the next decode step
    admitted: bool = False
    done: bool = False


class Engine:
    def __init__(self, backend: Backend, config: EngineConfig | None = None,
                 on_finish: Callable[[RequestStats], None] | None = None) -> None:
        self.backend = backend
        self.config = config or EngineConfig()
        self.on_finish = on_finish
        self._cond = threading.Condition()
        self._waiting: deque[_Seq] = deque()
        self._active = 0  # admitted and not finished; guarded by _cond
        self._running: list[_Seq] = []  # worker thread only; row i of _state
        self._state: Any = None
        self._closed = False
        self._thread: threading.Thread | None = None

    # --- the caller's side ------------------------------------------------------------------------------------

    @property
    def max_model_len(self) -> int:
        return self.backend.max_model_len

    @property
    def num_running(self) -> int:
        """Requests admitted and not finished. A request leaves this count before its last output is emitted,
        so a client that has its final chunk never sees itself counted (a /metrics scrape right after is exact)."""
        return self._active

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def start(self) -> Engine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="llmforge-engine", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop taking requests, abort the ones left, and stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def check_context(self, prompt_tokens: int, max_tokens: int) -> None:
        if prompt_tokens + max_tokens > self.max_model_len:
            raise ContextLengthError(prompt_tokens, max_tokens, self.max_model_len)

    def submit(self, requests: Sequence[GenerationRequest], on_output: Callable[[Output], None]) -> list[RequestHandle]:
        """Queue all of `requests` or none of them (QueueFullError, EngineClosedError, ContextLengthError)."""
        for r in requests:
            if not r.prompt_ids:
                raise LlmforgeError("the prompt is empty: it must hold at least one token")
            self.check_context(len(r.prompt_ids), r.params.max_tokens)
        now = time.monotonic()
        seqs = [self._new_seq(i, r, on_output, now) for i, r in enumerate(requests)]
        with self._cond:
            if self._closed:
                raise EngineClosedError("the server is shutting down")
            capacity = self.config.max_batch + self.config.max_queue
            if self._active + len(self._waiting) + len(seqs) > capacity:
                raise QueueFullError(
                    f"the server is at capacity ({self.config.max_batch} running, {self.config.max_queue} queued)"
                )
            self._waiting.extend(seqs)
            self._cond.notify_all()
        return [s.handle for s in seqs]

    def _new_seq(self, index: int, r: GenerationRequest, callback: Callable[[Output], None], now: float) -> _Seq:
        return _Seq(index, r, RequestHandle(), callback, RowSampler(r.params, tuple(r.prompt_ids)),
                    IncrementalText(self.backend.tokenizer, r.params.stop),
                    RequestStats(r.request_id, len(r.prompt_ids), now),
                    now + r.timeout_s if r.timeout_s else None)

    def generate(self, requests: Sequence[GenerationRequest], timeout: float | None = None) -> list[Completion]:
        """Blocking: submit together, wait for all (for warm-up, scripts and tests)."""
        results = [Completion() for _ in requests]
        finished = threading.Semaphore(0)

        def on_output(out: Output) -> None:
            results[out.index].add(out)
            if out.finish_reason is not None:
                finished.release()

        handles = self.submit(requests, on_output)
        for _ in requests:
            if not finished.acquire(timeout=timeout):
                for h in handles:
                    h.cancel()
                raise TimeoutError(f"generation did not finish within {timeout} s")
        return results

    # --- the worker ---------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not self._running:
                    self._cond.wait()
                if self._closed:
                    break
                admitted, dropped = self._admit(time.monotonic())
            for seq, reason in dropped:
                self._finish(seq, reason, self._why(reason))
            try:
                with torch.inference_mode():
                    self._step(admitted)
            except Exception as exc:  # a failed step fails its rows, never the worker
                log.exception("engine step failed")
                self._fail([*self._running, *admitted], f"{type(exc).__name__}: {exc}")
        self._shutdown()

    def _admit(self, now: float) -> tuple[list[_Seq], list[tuple[_Seq, str]]]:
        """Under the lock: take waiting requests into free slots, within the prefill budget."""
        dropped = [(s, r) for s in self._waiting if (r := self._gone(s, now))]
        for s, _ in dropped:
            self._waiting.remove(s)
        admitted: list[_Seq] = []
        width = 0
        while self._waiting and self._active + len(admitted) < self.config.max_batch:
            width = max(width, len(self._waiting[0].request.prompt_ids))
            if admitted and width * (len(admitted) + 1) > self.config.max_prefill_tokens:
                break
            admitted.append(self._waiting.popleft())
        self._active += len(admitted)
        for s in admitted:
            s.admitted, s.stats.scheduled = True, now
        return admitted, dropped

    @staticmethod
    def _gone(seq: _Seq, now: float) -> str | None:
        if seq.handle.cancelled:
            return "abort"
        if seq.deadline is not None and now > seq.deadline:
            return "timeout"
        return None

    def _step(self, admitted: list[_Seq]) -> None:
        self._retire(time.monotonic())
        if admitted:
            self._prefill_isolated(admitted)
        if self._running:
            self._decode()

    def _prefill_isolated(self, seqs: list[_Seq]) -> None:
        """Prefill the newcomers; when that fails, find the culprit alone: the running rows and the other
        newcomers go on (a prefill leaves the running batch's state untouched until it succeeds)."""
        try:
            self._prefill(seqs)
            return
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        for seq in seqs:
            if seq.done:
                continue
            if len(seqs) == 1 or seq.stats.completion_tokens:  # the culprit, or a row already past sampling
                log.warning("request %s failed in prefill: %s", seq.request.request_id, error)
                self._finish(seq, "error", error)
            else:
                self._prefill_isolated([seq])

    def _retire(self, now: float) -> None:
        """Drop running rows that were cancelled or ran out of time, before spending compute on them."""
        keep = []
        for i, seq in enumerate(self._running):
            reason = self._gone(seq, now)
            if reason:
                self._finish(seq, reason, self._why(reason))
            else:
                keep.append(i)
        self._select(keep)

    def _prefill(self, seqs: list[_Seq]) -> None:
        logits, state = self.backend.prefill([s.request.prompt_ids for s in seqs])  # (B, V)
        keep = self._sample(seqs, logits)
        state = self.backend.select(state, keep)
        if state is not None:
            self._state = state if self._state is None else self.backend.join(self._state, state)
            self._running += [seqs[i] for i in keep]

    def _decode(self) -> None:
        tokens = torch.tensor([s.pending for s in self._running])  # (B,)
        logits = self.backend.decode(self._state, tokens)  # (B, V)
        self._select(self._sample(self._running, logits))

    def _select(self, keep: list[int]) -> None:
        if len(keep) < len(self._running):
            self._state = self.backend.select(self._state, keep)
            self._running = [self._running[i] for i in keep]

    def _sample(self, seqs: list[_Seq], logits: torch.Tensor) -> list[int]:
        """Pick each row's next token and report it; return the rows that go on."""
        argmax = logits.argmax(-1).tolist()  # (B,) one vectorized pass serves every plain greedy row
        now = time.monotonic()
        keep = []
        for i, seq in enumerate(seqs):
            try:
                if not self._accept(seq, logits[i], argmax[i], now):
                    keep.append(i)
            except Exception as exc:  # one row's sampling or stopping fails that row alone; the batch goes on
                log.warning("request %s failed while sampling: %s: %s", seq.request.request_id,
                            type(exc).__name__, exc)
                self._finish(seq, "error", f"{type(exc).__name__}: {exc}")
        return keep

    def _accept(self, seq: _Seq, logits: torch.Tensor, argmax: int, now: float) -> bool:
        token, logprob = seq.sampler.pick(logits, argmax)
        seq.pending = token
        stats, params = seq.stats, seq.request.params
        stats.first_token = stats.first_token or now
        stats.token_times.append(now)
        reason = None
        if token in self.backend.eos_token_ids and not params.ignore_eos:
            reason, text = "stop", seq.text.flush()
        else:
            text = seq.text.push(token)
            if seq.text.stopped:
                reason = "stop"
            elif seq.sampler.complete:  # structured output: the grammar can go no further
                reason, text = "stop", text + seq.text.flush()
            elif (stats.completion_tokens >= params.max_tokens
                  or stats.prompt_tokens + stats.completion_tokens >= self.max_model_len):
                reason, text = "length", text + seq.text.flush()
        out = Output(seq.index, text, (token,), (logprob,) if logprob else (), reason,
                     stats.prompt_tokens, stats.completion_tokens)
        if reason:  # finished before its last output leaves: whoever receives it is no longer counted as running
            self._finish(seq, reason, None, emit=False)
        self._emit(seq, out)
        return reason is not None

    def _emit(self, seq: _Seq, out: Output) -> None:
        try:
            seq.callback(out)
        except Exception:  # a broken listener cancels its own request, nobody else's
            log.exception("output callback failed; cancelling request %s", seq.request.request_id)
            seq.handle.cancel()

    @staticmethod
    def _why(reason: str) -> str | None:
        return "the request timed out" if reason == "timeout" else None

    def _finish(self, seq: _Seq, reason: str, error: str | None, emit: bool = True) -> None:
        if seq.done:
            return
        seq.done = True
        if seq.admitted:  # before the last output leaves: whoever holds it is no longer counted as running
            with self._cond:
                self._active -= 1
        seq.stats.finished, seq.stats.finish_reason = time.monotonic(), reason
        if emit:
            stats = seq.stats
            self._emit(seq, Output(seq.index, seq.text.flush() if reason != "error" else "", (), (), reason,
                                   stats.prompt_tokens, stats.completion_tokens, error))
        if self.on_finish is not None:
            try:
                self.on_finish(seq.stats)
            except Exception:
                log.exception("on_finish callback failed")

    def _fail(self, seqs: list[_Seq], error: str) -> None:
        for seq in seqs:
            self._finish(seq, "error", error)
        self._running, self._state = [], None

    def _shutdown(self) -> None:
        with self._cond:
            waiting, self._waiting = list(self._waiting), deque()
        for seq in [*waiting, *self._running]:
            self._finish(seq, "abort", "the server is shutting down")
        self._running, self._state = [], None


class AsyncResults:
    """Submit requests and receive their outputs on the running event loop.

    Submission happens in the constructor, so admission errors surface before any response starts.
    Call `cancel()` once the response is over, however it ended: it stops whatever still runs (a client that
    went away, a stream cut short).
    """

    def __init__(self, engine: Engine, requests: Sequence[GenerationRequest]) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Output] = asyncio.Queue()
        self._open = len(requests)
        self._tokens: dict[int, tuple[int, int]] = {}  # index -> (prompt, completion) tokens, as last seen
        self.handles = engine.submit(requests, self._deliver)

    def _deliver(self, out: Output) -> None:  # worker thread
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, out)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    async def __aiter__(self) -> AsyncIterator[Output]:
        while self._open:
            out = await self._queue.get()
            self._tokens[out.index] = (out.prompt_tokens, out.completion_tokens)
            if out.finish_reason is not None:
                self._open -= 1
            yield out

    def usage(self) -> tuple[int, int]:
        """(prompt, completion) tokens of the outputs received so far, summed over the requests."""
        return sum(p for p, _ in self._tokens.values()), sum(c for _, c in self._tokens.values())

    async def collect(self) -> list[Completion]:
        results = [Completion() for _ in self.handles]
        async for out in self:
            results[out.index].add(out)
        return results

    def cancel(self) -> None:
        """Stop generating whatever still runs: the response is over (sent, or abandoned)."""
        for handle in self.handles:
            handle.cancel()
