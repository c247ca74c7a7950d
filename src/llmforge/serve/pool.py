"""The served models side by side: each its own backend and engine, picked by the request's `model` field.

Loading happens off the event loop so liveness answers while weights load; a model is ready once a warm-up
generation has gone through its engine (the first real request then pays no one-time costs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from llmforge.models.chat import template_text
from llmforge.models.cpu import cpu_threads
from llmforge.serve.backends import load_backend
from llmforge.serve.backends.base import Backend, LoadOptions
from llmforge.serve.engine import Engine, EngineConfig, GenerationRequest, RequestStats
from llmforge.serve.prompts import text_ids
from llmforge.serve.sampling import SamplingParams
from llmforge.serve.settings import ServeSettings

log = logging.getLogger("llmforge.serve")
Loader = Callable[[str, LoadOptions, str], Backend]  # (ref, options, backend name) -> backend
WARMUP_TIMEOUT_S = 120.0


@dataclass
class ServedModel:
    name: str
    ref: str
    status: str = "loading"  # loading | ready | failed
    error: str | None = None
    backend: Backend | None = None
    engine: Engine | None = None
    created: int = field(default_factory=lambda: int(time.time()))

    def describe(self) -> dict[str, Any]:
        info = dict(self.backend.info) if self.backend is not None else {}
        chat = self.backend is not None and bool(getattr(self.backend.tokenizer, "chat_template", None))
        return {"name": self.name, "ref": self.ref, "status": self.status, "error": self.error,
                "chat_template": chat, **info}


class ModelPool:
    def __init__(self, settings: ServeSettings, on_finish: Callable[[str, RequestStats], None] | None = None,
                 loader: Loader | None = None) -> None:
        self.settings = settings
        self.on_finish = on_finish
        self.loader = loader or (lambda ref, opts, backend: load_backend(ref, opts, backend))
        self.models = {name: ServedModel(name, ref) for name, ref in settings.models.items()}
        self.closed = False

    @property
    def ready(self) -> bool:
        return all(m.status == "ready" for m in self.models.values())

    def engines(self) -> list[tuple[str, Engine]]:
        return [(m.name, m.engine) for m in self.models.values() if m.engine is not None]

    def load_all(self, log_errors: bool = True) -> list[str]:
        """Load and warm every model (blocking); return the error of each model that failed.

        `log_errors=False`: the caller reports them (`serve` does, as one line, before binding the port)."""
        torch.set_num_threads(cpu_threads(self.settings.threads))  # the transformers backend's (process-wide)
        errors = []
        for model in self.models.values():
            if self.closed:  # shut down while loading: load nothing more
                break
            if model.status == "ready":  # loaded before the server started (`serve` does)
                continue
            try:
                self._load(model)
            except Exception as exc:  # one bad model must not take the others down
                model.status, model.error = "failed", str(exc) or type(exc).__name__
                if log_errors:
                    log.error("model '%s' (%s) failed to load: %s", model.name, model.ref, model.error)
                errors.append(f"model '{model.name}' ({model.ref}): {model.error}")
        return errors

    def _load(self, model: ServedModel) -> None:
        s = self.settings
        start = time.perf_counter()
        opts = LoadOptions(device=s.device, dtype=s.dtype, max_model_len=s.max_model_len,
                           max_rows=s.max_concurrency, threads=cpu_threads(s.threads))
        backend = self.loader(model.ref, opts, s.backend)
        if s.chat_template:  # checked when the settings were made; applied before any request is rendered
            backend.tokenizer.chat_template = template_text(s.chat_template)
        on_finish = (lambda stats: self.on_finish(model.name, stats)) if self.on_finish else None
        engine = Engine(backend, EngineConfig(s.max_concurrency, s.max_queue, s.max_prefill_tokens))
        model.backend, model.engine = backend, engine.start()
        if self.closed:
            engine.close()
            return
        if s.warmup:
            self._warm(model)
        engine.on_finish = on_finish  # after the warm-up, which is no traffic and stays out of the metrics
        model.status = "ready"
        log.info("model '%s' ready (%s, %.1f s)", model.name, backend.info.get("backend"), time.perf_counter() - start)

    @staticmethod
    def _warm(model: ServedModel) -> None:
        assert model.engine is not None and model.backend is not None
        prompt = text_ids(model.backend.tokenizer, "Hello") or [0]
        request = GenerationRequest(prompt, SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True),
                                    request_id="warmup")
        result = model.engine.generate([request], timeout=WARMUP_TIMEOUT_S)[0]
        if result.finish_reason == "error":
            raise RuntimeError(f"the warm-up generation failed: {result.error}")

    def close(self, timeout: float | None = 10.0) -> None:
        self.closed = True
        for model in self.models.values():
            if model.engine is not None:
                model.engine.close(timeout)

    def abort(self) -> None:
        """Abort every request now, without waiting (callable from the event loop); `close` joins later."""
        self.close(timeout=0)
