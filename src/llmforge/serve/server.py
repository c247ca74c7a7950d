"""`serve(settings)`: run the app under uvicorn, with JSON logs and a graceful SIGTERM.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections and lets in-flight requests finish for
`shutdown_grace_s`; meanwhile /ready answers 503 so a load balancer stops sending work here. Then the engines
abort whatever is left and the process exits.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from types import FrameType
from typing import Any

from llmforge.errors import LlmforgeError
from llmforge.serve.settings import ServeSettings


class JsonFormatter(logging.Formatter):
    """One JSON object per line; access records are JSON already and pass through unchanged."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "llmforge.serve.access":
            return message
        entry: dict[str, Any] = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname.lower(),
                                 "logger": record.name, "message": message}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def log_config(level: str) -> dict[str, Any]:
    """logging.dictConfig for llmforge and uvicorn: JSON lines on stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    loggers = {name: {"handlers": ["json"], "level": level.upper(), "propagate": False}
               for name in ("llmforge", "uvicorn", "uvicorn.error")}
    loggers["uvicorn.access"] = {"handlers": [], "level": "WARNING", "propagate": False}  # ours has request ids
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
            "handlers": {"json": handler}, "loggers": loggers}


def check_models(settings: ServeSettings) -> None:
    """Fail before binding the port when a model reference cannot even be resolved (a typo, a missing dir)."""
    from llmforge.models.loader import resolve_model
    from llmforge.serve.backends import detect_backend

    for name, ref in settings.models.items():
        backend = detect_backend(ref) if settings.backend == "auto" else settings.backend
        if backend != "transformers":  # exports (ONNX, GGUF) are checked by their own loaders
            continue
        try:
            resolve_model(ref)
        except LlmforgeError as exc:
            raise LlmforgeError(f"model '{name}': {exc}") from exc


def serve(settings: ServeSettings) -> None:
    """Serve until SIGTERM/SIGINT. Raises LlmforgeError when a model cannot be loaded."""
    import uvicorn

    from llmforge.serve.app import create_app

    check_models(settings)
    failures: list[str] = []
    server: Any = None

    def on_load_error(errors: list[str]) -> None:
        failures.extend(errors)
        if server is not None:
            server.should_exit = True  # a server that cannot serve what it was asked to should not linger

    app = create_app(settings, on_load_error=on_load_error)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=log_config(settings.log_level),
        access_log=False, timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s), lifespan="on",
    )
    server = _draining_server(config, app)
    server.run()
    if failures:
        raise LlmforgeError("could not load: " + "; ".join(failures))


def _draining_server(config: Any, app: Any) -> Any:
    """A uvicorn.Server that marks the app as draining the moment a shutdown signal arrives."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.state.draining = True  # /ready and new generation requests answer 503 from now on
            super().handle_exit(sig, frame)

    return DrainingServer(config)


def main(argv: list[str] | None = None) -> None:
    """`python -m llmforge.serve.server '{"models": {"demo": "demo"}, "port": 8000}'`: settings as JSON."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m llmforge.serve.server SETTINGS_JSON")
    serve(ServeSettings.model_validate_json(args[0]))


if __name__ == "__main__":
    main()
