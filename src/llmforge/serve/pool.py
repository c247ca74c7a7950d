"""The served models side by side: each its own backend and engine, picked by the request's `model` field.

Loading happens off the event loop so liveness answers while weights load; a model is ready once a warm-up
generation has gone through its engine (the first real request then pays no one-time costs).

An A/B-served name loads one model per variant (and one for its shadow), each keyed `name#variant`; `route`
picks the variant. A reload loads and warms the new models beside the serving ones (`stage`, in a thread),
swaps them in between two requests (`commit`, on the event loop), and lets each replaced engine finish its
in-flight requests before it closes (`drain`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from llmforge.models.chat import template_text
from llmforge.models.cpu import cpu_threads
from llmforge.serve.ab import SHADOW, Split
from llmforge.serve.backends import load_backend
from llmforge.serve.backends.base import Backend, LoadOptions
from llmforge.serve.engine import Engine, EngineConfig, GenerationRequest, RequestStats
from llmforge.serve.prompts import text_ids
from llmforge.serve.sampling import SamplingParams
from llmforge.serve.settings import ServeSettings

log = logging.getLogger("llmforge.serve")
Loader = Callable[[str, LoadOptions, str], Backend]  # (ref, options, backend name) -> backend
WARMUP_TIMEOUT_S = 120.0
DRAIN_POLL_S = 0.02


@dataclass
class ServedModel:
    name: str
    ref: str
    variant: str = ""  # the A/B variant ('shadow' for a shadow); '' for a model served alone
    status: str = "loading"  # loading | ready | failed
    error: str | None = None
    backend: Backend | None = None
    engine: Engine | None = None
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def key(self) -> str:
        return unit_key(self.name, self.variant)

    def describe(self) -> dict[str, Any]:
        info = dict(self.backend.info) if self.backend is not None else {}
        chat = self.backend is not None and bool(getattr(self.backend.tokenizer, "chat_template", None))
        return {"name": self.name, "variant": self.variant, "ref": self.ref, "status": self.status, "error": self.error,
                "chat_template": chat, **info}


def unit_key(name: str, variant: str) -> str:
    return f"{name}#{variant}" if variant else name


def units(settings: ServeSettings, names: list[str] | None = None) -> list[ServedModel]:
    """Every model `settings` loads (of `names` only, when given): each plain model, each variant, each shadow."""
    out = [ServedModel(name, ref) for name, ref in settings.models.items()]
    out += [ServedModel(name, ref, variant) for name, r in settings.ab.items() for variant, ref in r.refs().items()]
    return [m for m in out if names is None or m.name in names]


@dataclass
class Staged:
    """A reload's new models, loaded and warmed, not yet serving."""

    settings: ServeSettings
    names: list[str]
    models: list[ServedModel]


class ModelPool:
    def __init__(self, settings: ServeSettings,
                 on_finish: Callable[[ServedModel, RequestStats], None] | None = None,
                 loader: Loader | None = None) -> None:
        self.settings = settings
        self.on_finish = on_finish
        self.loader = loader or (lambda ref, opts, backend: load_backend(ref, opts, backend))
        self.models = {m.key: m for m in units(settings)}
        self.splits = {name: Split.of(name, r) for name, r in settings.ab.items()}
        self.retired: list[ServedModel] = []  # replaced by a reload, finishing their in-flight requests
        self.rng = random.Random()  # keyless A/B placement; a test seeds it
        self.closed = False

    def route(self, name: str, key: str | None) -> tuple[ServedModel | None, str]:
        """The model that serves a request for `name`, and its variant ('' unless `name` is A/B-served)."""
        split = self.splits.get(name)
        if split is None:
            model = self.models.get(name)
            return (model, "") if model is not None and not model.variant else (None, "")
        variant = split.pick(key, self.rng)
        return self.models.get(unit_key(name, variant)), variant

    def shadow(self, name: str) -> ServedModel | None:
        model = self.models.get(unit_key(name, SHADOW))
        return model if model is not None and model.status == "ready" else None

    def names(self) -> list[str]:
        return [*self.settings.models, *self.settings.ab]

    def public(self) -> list[ServedModel]:
        """One model per name a client may ask for (an A/B name by its first variant)."""
        return [m for m in self.models.values() if not m.variant or m.variant == self.splits[m.name].variants[0]]

    @property
    def ready(self) -> bool:
        return all(m.status == "ready" for m in self.models.values())

    def engines(self) -> list[tuple[str, Engine]]:
        return [(m.name, m.engine) for m in self.served() if m.engine is not None]

    def served(self) -> list[ServedModel]:
        """Every model holding an engine: the serving ones and those a reload replaced, still draining."""
        return [*self.models.values(), *self.retired]

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
        # A shadow's traffic is a copy: it stays out of the served metrics (its own are counted by the shadow).
        on_finish = ((lambda stats: self.on_finish(model, stats))  # type: ignore[misc]
                     if self.on_finish and model.variant != SHADOW else None)
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

    # --- reload ---------------------------------------------------------------------------------------------------

    def stage(self, settings: ServeSettings, names: list[str]) -> Staged:
        """Load and warm the models of `names` under `settings` beside the serving ones (blocking; in a thread).

        Every reference is resolved again, so an alias that moved (a registry promote) loads its new target.
        When one fails, the ones already loaded are closed and the error names it; nothing was swapped."""
        staged = Staged(settings, names, units(settings, names))
        for model in staged.models:
            try:
                if self.closed:
                    raise RuntimeError("the server is shutting down")
                self._load(model)
            except Exception as exc:
                for m in staged.models:
                    if m.engine is not None:
                        m.engine.close(0)
                raise RuntimeError(f"model '{model.key}' ({model.ref}) failed to load: {exc}") from exc
        return staged

    def commit(self, staged: Staged) -> list[ServedModel]:
        """Swap the staged models in; return the ones they replace (to `drain`). Call it on the event loop: a
        request picks its model and submits to it within one step of the loop, so none sees a half swap."""
        old = [m for m in self.models.values() if m.name in staged.names]
        models = {k: m for k, m in self.models.items() if m.name not in staged.names}
        models.update({m.key: m for m in staged.models})
        self.settings, self.models = staged.settings, models
        self.splits = {name: Split.of(name, r) for name, r in staged.settings.ab.items()}
        self.retired += old
        return old

    def drain(self, model: ServedModel, timeout: float) -> None:
        """Blocking: let a replaced model finish what it runs (at most `timeout` s), then close it."""
        engine = model.engine
        deadline = time.monotonic() + timeout
        while engine is not None and engine.num_running + engine.num_waiting and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL_S)
        if engine is not None:
            engine.close()
        if model in self.retired:
            self.retired.remove(model)
        log.info("model '%s' (%s) drained and closed", model.key, model.ref)

    def close(self, timeout: float | None = 10.0) -> None:
        self.closed = True
        for model in self.served():
            if model.engine is not None:
                model.engine.close(timeout)

    def abort(self) -> None:
        """Abort every request now, without waiting (callable from the event loop); `close` joins later."""
        self.close(timeout=0)
