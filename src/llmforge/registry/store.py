"""Where the registry lives and the MLflow client that talks to it.

The store is MLflow's Model Registry: an embedded SQLite file by default ($LLMFORGE_HOME/registry/mlflow.db, else
~/.cache/llmforge/registry/mlflow.db, as `llmforge.models.presets` picks its home), or a team's MLflow server
or database by URI ($LLMFORGE_REGISTRY_URI, or `--registry-uri`). MLflow is the optional extra `registry`,
imported only here and only when a registry is used.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from llmforge.errors import LlmforgeError, require

F = TypeVar("F", bound=Callable[..., Any])
URI_ENV = "LLMFORGE_REGISTRY_URI"
EXPERIMENT = "llmforge-registry"  # the MLflow experiment holding one run per registered version


def registry_home() -> Path:
    """$LLMFORGE_HOME/registry, else $XDG_CACHE_HOME/llmforge/registry (~/.cache/...)."""
    home = os.environ.get("LLMFORGE_HOME")
    if home:
        return Path(home).expanduser() / "registry"
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "llmforge" / "registry"


def registry_uri(uri: str | None = None) -> str:
    """The registry to use: `uri`, else $LLMFORGE_REGISTRY_URI, else the embedded SQLite store."""
    return uri or os.environ.get(URI_ENV) or f"sqlite:///{registry_home() / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@functools.lru_cache(maxsize=8)
def client(uri: str) -> Any:
    """An `mlflow.MlflowClient` for tracking and registry at `uri` (created once per process: opening a new SQLite
    store runs MLflow's schema migrations, seconds)."""
    # An offline tool: MLflow's usage telemetry is off unless the user turned it on.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a 3 kB manifest needs no bar
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a library does not print (server runs)
    # An unreachable server: MLflow's defaults (7 retries, exponential backoff, 120 s timeout) wait minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    mlflow = require("mlflow", "registry")
    # "Creating initial MLflow database tables...", "Waiting up to 300 seconds for model version to finish creation"
    for noisy in ("mlflow.store.db.utils", "alembic", "mlflow.store.model_registry.abstract_store"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    path = _sqlite_path(uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    except mlflow.exceptions.MlflowException as exc:
        raise LlmforgeError(f"cannot open the model registry at {uri}: {exc.message}") from exc


def experiment_id(uri: str) -> str:
    """The experiment holding registration runs; with an embedded store its artifacts sit beside the database
    (MLflow's default would be ./mlruns under the current directory)."""
    mlflow_client = client(uri)
    found = mlflow_client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    path = _sqlite_path(uri)
    location = (path.parent / "artifacts").resolve().as_uri() if path is not None else None
    return mlflow_client.create_experiment(EXPERIMENT, artifact_location=location)


def mlflow_error() -> type[Exception]:
    """MLflow's exception class (for `except`), imported lazily like the rest."""
    return require("mlflow.exceptions", "registry").MlflowException


def registry_errors(func: F) -> F:
    """Turn an MLflow failure inside `func` (a server that does not answer, a refused request) into one error
    naming the registry; `func` takes the registry URI as its `uri` argument."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LlmforgeError:
            raise
        except Exception as exc:
            if type(exc).__name__ != "MlflowException":
                raise
            uri = registry_uri(signature.bind(*args, **kwargs).arguments.get("uri"))
            raise LlmforgeError(f"the model registry at {uri} failed: {getattr(exc, 'message', exc)}") from exc

    return wrapper  # type: ignore[return-value]
