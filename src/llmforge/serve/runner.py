"""`serve(settings)`: run the app under uvicorn, with JSON logs and a graceful SIGTERM.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections and lets in-flight requests finish for
`shutdown_grace_s`; meanwhile /ready answers 503 so a load balancer stops sending work here. When the grace
period is over, the engines abort whatever is left, so those requests answer 503 with Retry-After themselves
(a stream ends with an error event) before uvicorn's own, slightly later, deadline would cancel them.

SIGHUP reloads every model without dropping a request (`rollout.Reloader`, as POST /admin/reload does).

Every model is loaded (and warmed) before the port is bound: a missing directory or a corrupt file is a
one-line error before any uvicorn log, and /health never answers for a server that cannot serve.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import signal
import sys
from types import FrameType
from typing import Any

from llmforge.errors import LlmforgeError
from llmforge.serve.settings import ServeSettings

log = logging.getLogger("llmforge.serve")
ABORT_MARGIN_S = 3  # uvicorn cancels the requests this long after the engines have aborted them


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


def serve(settings: ServeSettings) -> None:
    """Serve until SIGTERM/SIGINT. Raises LlmforgeError, before binding the port, when a model cannot be loaded."""
    import logging.config

    import uvicorn

    from llmforge.serve.app import create_app

    logging.config.dictConfig(log_config(settings.log_level))
    app = create_app(settings)
    errors = app.state.pool.load_all(log_errors=False)  # before the port is bound; the lifespan finds them ready
    if errors:
        app.state.pool.close()
        raise LlmforgeError("could not load " + "; ".join(errors))
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=log_config(settings.log_level),
        access_log=False, timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s) + ABORT_MARGIN_S,
        lifespan="on",
    )
    if settings.ui:
        log.info("playground: http://%s:%d/ui/ (the API key is typed into the page)", settings.host, settings.port)
    _draining_server(config, app, settings.shutdown_grace_s).run()


def _draining_server(config: Any, app: Any, grace_s: float) -> Any:
    """A uvicorn.Server that marks the app as draining the moment a shutdown signal arrives, and aborts the
    requests still generating once `grace_s` is over (they answer 503 themselves)."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.state.draining = True  # /ready and new generation requests answer 503 from now on
            super().handle_exit(sig, frame)

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            _reload_on_sighup(app)

        async def shutdown(self, sockets: Any = None) -> None:
            app.state.draining = True
            timer = asyncio.get_running_loop().call_later(grace_s, _abort_in_flight, app, grace_s)
            try:
                await super().shutdown(sockets)
            finally:
                timer.cancel()

    return DrainingServer(config)


def _reload_on_sighup(app: Any) -> None:
    if not hasattr(signal, "SIGHUP"):  # Windows
        return
    loop, reloader = asyncio.get_running_loop(), app.state.reloader

    def reload() -> None:
        log.info("SIGHUP: reloading every model")
        task = loop.create_task(reloader.on_signal())
        reloader.drains.add(task)  # held until done, like the drains
        task.add_done_callback(reloader.drains.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (RuntimeError, ValueError):  # not the main thread (a server run inside a test): no signals to take
        log.debug("SIGHUP reload not installed: not on the main thread")


def _abort_in_flight(app: Any, grace_s: float) -> None:
    pool = app.state.pool
    left = sum(e.num_running + e.num_waiting for _, e in pool.engines())
    if left:
        log.warning("shutdown grace period of %g s is over: aborting %d request(s) still generating; "
                    "they are answered 503 with Retry-After", grace_s, left)
    pool.abort()


def main(argv: list[str] | None = None) -> None:
    """`python -m llmforge.serve.runner '{"models": {"demo": "demo"}, "port": 8000}'`: settings as JSON."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m llmforge.serve.runner SETTINGS_JSON")
    serve(ServeSettings.model_validate_json(args[0]))


if __name__ == "__main__":
    main()
