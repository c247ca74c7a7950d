"""The web playground at /ui: a static page that talks to this server's own API, nothing around it.

Chat and Compare call /v1/chat/completions (streamed), /tokenize and /detokenize (the rendered prompt) and
/v1/models, exactly as any OpenAI client does. Runs, Registry and A/B read through the routes below, which
return what run directories, the registry store and the event log hold (no copy of a number is kept here).

The page itself (HTML, JS, CSS, no data) loads without a key, like a sign-in page; every request it makes
carries the key the user types in, kept in the tab's sessionStorage. Everything under /ui/api is keyed like the
rest of the API. Assets are shipped in the package: no CDN, so the page works offline. The front end is Preact +
htm as plain ES modules (no build step), vendored from npm by `make ui-vendor` (README: Playground).
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Query
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from llmforge import __version__
from llmforge.errors import LlmforgeError
from llmforge.serve.http_errors import APIError
from llmforge.serve.settings import ServeSettings
from llmforge.serve.ui.runs import RunNotFound, RunRoots, list_runs, run_detail, run_file

STATIC = Path(__file__).parent / "static"
PUBLIC_PREFIX = "/ui/static/"  # the page's own files; /ui/api/* needs the key
PUBLIC_PATHS = ("/ui", "/ui/")


@cache
def _page(auth: bool) -> tuple[bytes, str]:
    """index.html and its Content-Security-Policy: only this origin's scripts, plus the inline import map by hash.
    A meta tag tells the page whether this server wants a key, so it asks for one before calling the API."""
    html = (STATIC / "index.html").read_bytes().replace(
        b"<title>", f'<meta name="llmforge-auth" content="{"required" if auth else "none"}">\n<title>'.encode(), 1)
    hashes = [base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode()
              for m in re.finditer(rb'<script type="importmap">(.*?)</script>', html, re.S)]
    scripts = " ".join(["'self'", *(f"'sha256-{h}'" for h in hashes)])
    csp = (f"default-src 'self'; script-src {scripts}; style-src 'self' 'unsafe-inline'; "
           "img-src 'self' data: blob:; connect-src 'self'; frame-src 'self' blob: data:; object-src 'none'; "
           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return html, csp


def install_ui(app: FastAPI, settings: ServeSettings) -> None:
    """Mount the page and its data routes on `app` (called by `create_app` when `settings.ui`). The data routes
    are plain functions: FastAPI runs them in its thread pool, so reading disks and the registry never blocks
    the event loop that streams replies."""
    roots = RunRoots.of(settings.ui_runs)
    router = APIRouter(prefix="/ui", include_in_schema=False)

    @router.get("")
    async def ui_redirect() -> Response:
        return RedirectResponse("/ui/", status_code=308)

    @router.get("/")
    async def page() -> Response:
        html, csp = _page(bool(settings.api_keys))
        return Response(html, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
                                 "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"})

    @router.get("/api/overview")
    def overview() -> dict[str, Any]:
        """What the server was started with that the OpenAI API does not say: A/B splits, run roots, logs."""
        ab = {name: {"variants": {v: {"model": spec.model, "weight": spec.weight} for v, spec in r.variants.items()},
                     "shadow": r.shadow} for name, r in app.state.pool.settings.ab.items()}
        return {"version": __version__, "ab": ab, "run_roots": [str(r) for r in roots.roots],
                "event_log": str(settings.event_log) if settings.event_log else None,
                "ab_summary": _ab_summary(settings)}

    @router.get("/api/runs")
    def runs() -> dict[str, Any]:
        return {"roots": [str(r) for r in roots.roots], "runs": list_runs(roots)}

    @router.get("/api/run")
    def run(id: str = Query(..., max_length=1024)) -> dict[str, Any]:  # noqa: A002 - the page's own name
        try:
            return run_detail(roots, id)
        except RunNotFound as exc:
            raise APIError(404, str(exc), param="id", code="run_not_found") from exc

    @router.get("/api/file")
    def file(run: str = Query(..., max_length=1024), name: str = Query(..., max_length=1024)) -> Response:
        try:
            path, media = run_file(roots, run, name)
        except RunNotFound as exc:
            raise APIError(404, str(exc), param="name", code="file_not_found") from exc
        # A run's HTML page is shown in a sandboxed frame; as a top-level document it gets no script either.
        return FileResponse(path, media_type=media, headers={"Content-Security-Policy": "sandbox",
                                                             "X-Content-Type-Options": "nosniff"})

    @router.get("/api/registry")
    def registry() -> dict[str, Any]:
        return _registry()

    app.include_router(router)
    app.mount(PUBLIC_PREFIX.rstrip("/"), StaticFiles(directory=STATIC), name="ui-static")


def _ab_summary(settings: ServeSettings) -> list[dict[str, Any]] | None:
    """Per-variant requests, errors, latency and feedback from the event log (None without one)."""
    if settings.event_log is None or not (settings.event_log / "events.jsonl").is_file():
        return None
    from llmforge.serve.ab_report import collect
    from llmforge.serve.events import read_events

    try:
        groups = collect(read_events(settings.event_log))
    except LlmforgeError as exc:
        return [{"error": str(exc)}]
    return [v.summary() for vs in groups.values() for v in vs.values()]


def _registry() -> dict[str, Any]:
    """Registered models, their versions and aliases; or why the registry cannot be read here."""
    try:
        from llmforge import registry

        uri = registry.registry_uri()
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
            return {"available": True, "uri": uri, "models": []}  # nothing registered yet; viewing creates no store
        models = registry.list_models(uri)
    except ImportError:
        return {"available": False, "message": "the registry needs the extra: pip install 'llmforge[registry]'"}
    except LlmforgeError as exc:
        return {"available": False, "message": str(exc)}
    return {"available": True, "uri": uri, "models": [
        {"name": m.name, "aliases": m.aliases,
         "versions": [{"version": v.version, "aliases": list(v.aliases), "kind": v.kind, "run_dir": str(v.run_dir),
                       "registered_at": v.registered_at, "registered_by": v.registered_by, "metrics": v.metrics}
                      for v in m.versions],
         "decisions": [{"action": d.action, "alias": d.alias, "version": d.version, "previous": d.previous,
                        "reason": d.reason, "by": d.by, "at": d.at} for d in m.decisions]}
        for m in models]}
