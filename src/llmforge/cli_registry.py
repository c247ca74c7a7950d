"""`llmforge registry ...`: the registry's commands -> llmforge.registry calls, shown by ui_registry.py.

cli.py adds this group to the `llmforge` command; like cli.py, it parses and shows, and holds no logic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

registry_app = typer.Typer(help="Versions, lineage, promote, rollback: finished runs in MLflow's Model Registry.",
                           no_args_is_help=True)
RegistryUriOpt = Annotated[Optional[str], typer.Option(
    "--registry-uri", envvar="LLMFORGE_REGISTRY_URI", show_envvar=True,
    help="MLflow registry (sqlite:///FILE, http://server:5000); default $LLMFORGE_HOME/registry/mlflow.db.")]
ReasonOpt = Annotated[Optional[str], typer.Option("--reason", "-m", help="Why (recorded with the decision).")]
ReloadOpt = Annotated[Optional[list[str]], typer.Option(
    "--reload", metavar="URL", help="After the alias moves, POST /admin/reload to this running server (repeatable; "
    "one after the other): it loads the new version while the old one serves, then swaps.")]
ReloadKeyOpt = Annotated[Optional[str], typer.Option(
    "--api-key", envvar="LLMFORGE_API_KEY", help="The servers' API key for --reload (or LLMFORGE_API_KEY).")]


def check_reload(urls: list[str] | None) -> None:
    """Refuse a bad --reload URL before the alias moves."""
    from llmforge.registry.reload import reload_endpoint

    for url in urls or []:
        try:
            reload_endpoint(url)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--reload") from None


def reload_after(urls: list[str] | None, api_key: str | None) -> None:
    if not urls:
        return
    from llmforge.registry import reload_servers
    from llmforge.ui_registry import show_reloads

    outcomes = reload_servers(urls, api_key)
    show_reloads(outcomes)
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


@registry_app.command("register")
def registry_register(run_dir: Annotated[Path, typer.Argument(help="A finished llmforge run directory.")],
                      name: Annotated[str, typer.Option("--name", help="Registered model name.")],
                      description: Annotated[Optional[str], typer.Option(help="Version description.")] = None,
                      registry_uri: RegistryUriOpt = None) -> None:
    """Register a finished run directory as the next version of NAME (its manifest pins every file)."""
    from llmforge.registry import register
    from llmforge.ui import say

    v = register(run_dir, name, description=description, uri=registry_uri)
    say(f"registered {v.ref}: {v.run_dir} ({v.kind}, manifest sha256 {v.manifest_sha256})")


@registry_app.command("list")
def registry_list(registry_uri: RegistryUriOpt = None) -> None:
    """Registered models, their version counts and aliases."""
    from llmforge.registry import list_models
    from llmforge.registry import registry_uri as uri_of
    from llmforge.ui_registry import show_models

    show_models(list_models(registry_uri), uri_of(registry_uri))


@registry_app.command("show")
def registry_show(ref: Annotated[str, typer.Argument(help="NAME (versions and decisions), NAME@VERSION or NAME@ALIAS.")],
                  registry_uri: RegistryUriOpt = None) -> None:
    """A model's versions and decisions, or one version's run dir, lineage and metrics."""
    from llmforge.registry import model_info, parse_ref, version_info
    from llmforge.registry.versions import registered_manifest
    from llmforge.ui_registry import show_model, show_version

    name, selector = parse_ref(ref)
    if "@" not in ref:
        show_model(model_info(name, registry_uri))
        return
    v = version_info(name, selector, registry_uri)
    show_version(v, registered_manifest(v, registry_uri))


@registry_app.command("promote")
def registry_promote(ref: Annotated[str, typer.Argument(help="NAME@VERSION")],
                     to: Annotated[str, typer.Option("--to", help="production | staging")] = "production",
                     reason: ReasonOpt = None, registry_uri: RegistryUriOpt = None, reload: ReloadOpt = None,
                     api_key: ReloadKeyOpt = None) -> None:
    """Point an alias at a version, after verifying its files; --reload tells running servers."""
    from llmforge.registry import promote
    from llmforge.ui_registry import show_decision

    check_reload(reload)
    name, _, version = ref.removeprefix("registry:").partition("@")
    show_decision(promote(name, version, to, reason=reason, uri=registry_uri), name)
    reload_after(reload, api_key)


@registry_app.command("rollback")
def registry_rollback(name: Annotated[str, typer.Argument(help="Registered model name.")],
                      alias: Annotated[str, typer.Option("--alias", help="production | staging")] = "production",
                      reason: ReasonOpt = None, registry_uri: RegistryUriOpt = None, reload: ReloadOpt = None,
                      api_key: ReloadKeyOpt = None) -> None:
    """Point the alias back at the version that held it before; --reload tells running servers."""
    from llmforge.registry import rollback
    from llmforge.ui_registry import show_decision

    check_reload(reload)
    show_decision(rollback(name, alias, reason=reason, uri=registry_uri), name)
    reload_after(reload, api_key)


@registry_app.command("verify")
def registry_verify(ref: Annotated[str, typer.Argument(help="NAME@VERSION, NAME@ALIAS or NAME (production).")],
                    registry_uri: RegistryUriOpt = None) -> None:
    """Re-hash a version's files; name every changed, missing and added file (exit 1 when any)."""
    from llmforge.registry import parse_ref, verify
    from llmforge.ui_registry import show_verification

    checked = verify(*parse_ref(ref), uri=registry_uri)
    show_verification(checked)
    if not checked.ok:
        raise typer.Exit(1)
