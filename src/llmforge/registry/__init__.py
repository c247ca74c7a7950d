"""Versions, lineage, promote, rollback: llmforge runs in MLflow's Model Registry, with llmforge's integrity check.

    from llmforge import registry
    v = registry.register("runs/train", name="chat")          # VersionInfo: version 1, pinned by its manifest
    registry.promote("chat", v.version, to="production")      # Decision, recorded in the registry
    registry.verify("chat", "production").drift                # Drift: changed / missing / added files
    registry.resolve("registry:chat@production")               # the run dir, verified (or IntegrityError)
    registry.rollback("chat")                                  # production back to the version before
    registry.reload_servers(["http://127.0.0.1:8000"], key)    # running servers pick the move up, no request lost

`registry:NAME@production`, `registry:NAME@3` and `registry:NAME` (= production) are model references every
command accepts (`llmforge.models.reference`). The store: $LLMFORGE_REGISTRY_URI, else an embedded SQLite file
(`llmforge.registry.store`). Needs the extra: pip install 'llmforge[registry]'.
"""

from llmforge.registry.decisions import Decision
from llmforge.registry.integrity import Drift, check_files
from llmforge.registry.promote import ALIASES, promote, refuse, rollback
from llmforge.registry.reload import ReloadOutcome, reload_servers
from llmforge.registry.store import URI_ENV, registry_uri
from llmforge.registry.versions import (
    PREFIX,
    IntegrityError,
    ModelInfo,
    Verification,
    VersionInfo,
    list_models,
    model_info,
    parse_ref,
    register,
    resolve,
    verify,
    version_info,
)

__all__ = ["ALIASES", "PREFIX", "URI_ENV", "Decision", "Drift", "IntegrityError", "ModelInfo", "Verification",
           "ReloadOutcome", "VersionInfo", "check_files", "list_models", "model_info", "parse_ref", "promote",
           "register", "refuse", "registry_uri", "reload_servers", "resolve", "rollback", "verify", "version_info"]
