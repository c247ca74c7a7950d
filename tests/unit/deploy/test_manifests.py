"""deploy/: the Kubernetes manifests against Kubernetes' own JSON schemas (kubernetes-validate ships them; offline,
strict: an unknown or misspelt field fails), compose.yaml against the compose-spec schema (check-jsonschema ships
it), and the wiring between the files that no schema sees: ports, paths, secrets, selectors, env names."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
K8S = DEPLOY / "kubernetes"
# The oldest Kubernetes still widely run (EKS/GKE extended support) and the newest the schemas know.
K8S_VERSIONS = ["1.30.0", "1.37.0"]


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _resources() -> dict[str, dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return {doc["kind"]: doc for name in kustomization["resources"] for doc in _load_all(K8S / name)}


def _validate(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the dev extra")
    kubernetes_validate.validate(doc, version, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version: str) -> None:
    resources = _resources()
    assert set(resources) == {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    for doc in resources.values():
        _validate(doc, version)


def test_the_schema_check_rejects_a_misspelt_field() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the dev extra")

    bad = copy.deepcopy(_resources()["Deployment"])
    container = bad["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(bad, K8S_VERSIONS[-1])
    bad = copy.deepcopy(_resources()["Deployment"])
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(bad, K8S_VERSIONS[-1])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_build_validates() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert len(docs) == 4
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "llmforge"
        _validate(doc, K8S_VERSIONS[-1])


def _serve_args() -> list[str]:
    pod = _resources()["Deployment"]["spec"]["template"]["spec"]
    return pod["containers"][0].get("args", [])


def _settings_from_args(args: list[str]) -> Any:
    """The server's settings as `llmforge serve ARGS` would build them (the --set overrides, validated)."""
    from llmforge.config import apply_overrides, validate
    from llmforge.serve.settings import ServeSettings

    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    assert len(sets) * 2 == len(args), f"only --set arguments are expected here: {args}"
    base = ServeSettings(models={"m": "demo"}, api_keys=["k"]).model_dump(mode="json")
    return validate(ServeSettings, apply_overrides(base, sets), "serve --set")


def test_deployment_probes_security_and_key() -> None:
    deployment = _resources()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    # The kubelet sends no bearer key: every probed path must be public in the server's own settings.
    settings = _settings_from_args(_serve_args())
    probed = {container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert probed <= set(settings.public_paths)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in settings.public_paths
    assert settings.threads == int(container["resources"]["limits"]["cpu"])  # no oversubscribed quota

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user (deploy/Dockerfile)
    for c in [*pod["containers"], *pod.get("initContainers", [])]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
        writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
        assert {"/tmp", "/home/llmforge"} <= writable  # the read-only root fs leaves these to write

    env = {e["name"]: e["value"] for e in container["env"]}
    key_mount = next(m for m in container["volumeMounts"] if m["name"] == "api-key")
    assert Path(env["LLMFORGE_API_KEY_FILE"]).parent == Path(key_mount["mountPath"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["api-key"]["secret"]["secretName"] == "llmforge-api-key"
    models = next(m for m in container["volumeMounts"] if m["name"] == "models")
    assert models["readOnly"] is True and env["LLMFORGE_MODEL"].startswith(models["mountPath"] + "/")


def test_init_container_pulls_where_the_server_reads() -> None:
    from llmforge.models.presets import list_presets

    pod = _resources()["Deployment"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    cmd = init["command"]
    assert cmd[:2] == ["llmforge", "pull"]
    assert cmd[2] in {row["name"] for row in list_presets()}
    target = cmd[cmd.index("--dir") + 1]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["LLMFORGE_MODEL"] == target  # `llmforge pull --dir D` is served by its path D


def test_service_pdb_hpa_point_at_the_deployment() -> None:
    r = _resources()
    labels = r["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert r["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert r["Service"]["spec"]["selector"].items() <= labels.items()
    assert r["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in r["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert r["Service"]["spec"]["ports"][0]["targetPort"] in ports
    target = r["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", r["Deployment"]["metadata"]["name"])
    assert r["HorizontalPodAutoscaler"]["spec"]["minReplicas"] > r["PodDisruptionBudget"]["spec"]["minAvailable"]


def _serve_envvars() -> set[str]:
    import typer.main

    from llmforge.cli import app

    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    return {p.envvar for p in serve.params if isinstance(p.envvar, str)}


def _llmforge_env_names() -> dict[str, set[str]]:
    """LLMFORGE_* variables each deploy file sets for the server."""
    import re

    found: dict[str, set[str]] = {}
    for path in [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.cuda", DEPLOY / "compose.yaml", K8S / "deployment.yaml"]:
        text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        assigned = re.findall(r"(?<!\$\{)\b(LLMFORGE_[A-Z_]+)\s*[=:]", text)  # not compose's ${X:-default}
        found[path.name] = set(assigned) | set(re.findall(r"name:\s*(LLMFORGE_[A-Z_]+)", text))
    return found


def test_every_env_variable_set_is_one_serve_reads() -> None:
    known = _serve_envvars() | {"LLMFORGE_HOME"}  # LLMFORGE_HOME: the models cache (`llmforge pull`)
    assert {"LLMFORGE_MODEL", "LLMFORGE_API_KEY", "LLMFORGE_API_KEY_FILE", "LLMFORGE_HOST"} <= known
    for name, variables in _llmforge_env_names().items():
        assert variables, name
        assert variables <= known, f"{name} sets {variables - known}, which `llmforge serve` does not read"


# compose + Prometheus + Grafana


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _check_jsonschema(*args: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema is in the dev extra")
    return subprocess.run([sys.executable, "-m", "check_jsonschema", *args], capture_output=True, text=True,
                          timeout=120)


def test_compose_matches_the_compose_spec(tmp_path: Path) -> None:
    ok = _check_jsonschema("--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = _compose()
    bad["services"]["llmforge"]["healthcheck"]["intervall"] = "15s"
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(bad))
    rejected = _check_jsonschema("--builtin-schema", "vendor.compose-spec", str(tmp_path / "compose.yaml"))
    assert rejected.returncode == 1 and "intervall" in rejected.stdout + rejected.stderr


def test_compose_wiring() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"llmforge", "prometheus", "grafana"}
    app = services["llmforge"]
    assert (DEPLOY / app["build"]["context"] / app["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert app["read_only"] is True and {"/tmp", "/home/llmforge"} <= set(app["tmpfs"])
    assert "python" in app["healthcheck"]["test"] and any("/health" in part for part in app["healthcheck"]["test"])
    assert any(v.endswith(":/models:ro") for v in app["volumes"])
    (secret,) = app["secrets"]
    assert app["environment"]["LLMFORGE_API_KEY_FILE"] == f"/run/secrets/{secret}"
    assert secret in compose["secrets"] and secret in services["prometheus"]["secrets"]
    assert services["prometheus"]["depends_on"]["llmforge"]["condition"] == "service_healthy"
    for service in services.values():  # every file a service mounts from the repo is there
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), source


def test_prometheus_scrapes_the_server_with_its_key() -> None:
    compose = _compose()
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in compose["services"] and f"{port}:{port}" in compose["services"][host]["ports"]
    (secret,) = compose["services"]["prometheus"]["secrets"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": f"/run/secrets/{secret}"}
    # Without the key /metrics is 401 unless it is public; compose keeps it private, so the key is required.
    assert "/metrics" not in _settings_from_args([]).public_paths


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian: prometheus)")
def test_promtool_accepts_the_config(tmp_path: Path) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    key = tmp_path / "key"
    key.write_text("k\n")  # promtool checks that credentials_file exists
    config["scrape_configs"][0]["authorization"]["credentials_file"] = str(key)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_grafana_provisioning_finds_the_dashboard_and_datasource() -> None:
    import json

    grafana = _compose()["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("./"))
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/llmforge.yaml").read_text())["providers"][0]
    dashboards_dir = next(DEPLOY / src for src, dst in mounts.items() if dst == provider["options"]["path"])
    dashboards = list(dashboards_dir.glob("*.json"))
    assert dashboards
    (datasource,) = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        uids = {p["datasource"]["uid"] for p in dashboard["panels"]}
        uids |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
        assert uids == {datasource["uid"]}


# Continuous training: deploy/kubernetes/retrain (opt-in, its own kustomization)

RETRAIN = K8S / "retrain"


def _retrain_resources() -> dict[str, dict[str, Any]]:
    kustomization = yaml.safe_load((RETRAIN / "kustomization.yaml").read_text())
    return {doc["kind"]: doc for name in kustomization["resources"] for doc in _load_all(RETRAIN / name)}


def test_retrain_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((RETRAIN / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in RETRAIN.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_retrain_cronjob_matches_the_kubernetes_schemas(version: str) -> None:
    resources = _retrain_resources()
    assert set(resources) == {"CronJob"}
    _validate(resources["CronJob"], version)


def test_retrain_cronjob_runs_the_retrain_command_on_its_mounts() -> None:
    import typer.main

    from llmforge.cli import app
    from llmforge.stages import load_config

    cron = _retrain_resources()["CronJob"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"  # two retrains would compare against one production
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    assert command[:2] == ["llmforge", "retrain"]
    retrain = typer.main.get_command(app).commands["retrain"]  # type: ignore[attr-defined]
    params = retrain.make_context("retrain", list(command[2:])).params  # an unknown or missing option raises
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config = Path(params["config"])
    assert config.parent == Path(mounts["config"]["mountPath"]) and volumes["config"]["configMap"]["name"]
    (data,) = params["data"]
    assert data.startswith(mounts["data"]["mountPath"] + "/") and mounts["data"]["readOnly"] is True
    # The shipped config under the job's overrides: it writes its runs to the shared volume, one thread per CPU.
    cfg = load_config(Path(__file__).resolve().parents[3] / "configs" / config.name, params["set_"])
    assert Path(mounts["runs"]["mountPath"]) in cfg.output_dir.parents and not mounts["runs"].get("readOnly")
    assert cfg.train.threads == int(container["resources"]["limits"]["cpu"])
    assert cfg.retrain.registry and "registry_uri" in params
    env = {e["name"]: e["value"] for e in container["env"]}
    envvar = next(p.envvar for p in retrain.params if p.name == "registry_uri")
    assert env[envvar].startswith(("http://", "https://"))  # a registry every pod reaches, not a pod's SQLite file
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"/tmp", "/home/llmforge"} <= {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
