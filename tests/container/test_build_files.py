"""Dockerfile (parsed with the ``dockerfile`` package), .dockerignore, buildspec.yml (run with shims)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import dockerfile
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def commands() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(ROOT / "Dockerfile")))


def by_cmd(commands, name: str) -> list[dockerfile.Command]:
    return [c for c in commands if c.cmd.upper() == name]


def test_base_image_is_cuda_runtime_matching_the_torch_build(commands):
    args = dict(v.split("=", 1) for c in by_cmd(commands, "ARG") for v in c.value if "=" in v)
    (from_,) = by_cmd(commands, "FROM")
    assert from_.value[0] == "${CUDA_BASE}"
    assert args["CUDA_BASE"].startswith("nvidia/cuda:13.")
    assert "-runtime-" in args["CUDA_BASE"]
    # holoscan-cu13 and the torch wheel must agree on the CUDA major version.
    assert args["TORCH_INDEX_URL"].endswith("/cu130")


def test_sagemaker_labels(commands):
    labels = {}
    for c in by_cmd(commands, "LABEL"):
        labels.update(dict(zip(c.value[::2], c.value[1::2], strict=True)))
    assert labels["com.amazonaws.sagemaker.capabilities.multi-models"] == "true"
    assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"


def test_exec_form_entrypoint_runs_serve(commands):
    (entry,) = by_cmd(commands, "ENTRYPOINT")
    assert entry.json, "ENTRYPOINT must be exec form so SIGTERM reaches serve"
    assert entry.value == ("/opt/program/container/serve",)
    assert (ROOT / "container" / "serve").stat().st_mode & stat.S_IXUSR
    (cmd,) = by_cmd(commands, "CMD")
    assert cmd.json and cmd.value == ("serve",)
    (workdir,) = by_cmd(commands, "WORKDIR")
    assert workdir.value == ("/opt/program",)


def test_installed_by_the_one_install_script_without_dev_extras(commands):
    runs = [c.value[0] for c in by_cmd(commands, "RUN")]
    (install,) = [r for r in runs if "scripts/install.sh" in r]
    assert "VENV=/opt/venv" in install
    assert "TORCH_INDEX_URL=${TORCH_INDEX_URL}" in install
    assert 'INSTALL_EXTRA=""' in install
    assert "pip install" not in " ".join(runs), "all Python installs go through scripts/install.sh"
    assert any("openjdk-17-jre-headless" in r and "rm -rf /var/lib/apt/lists/*" in r for r in runs)
    # forward compatibility for SageMaker hosts whose driver predates CUDA 13 (container/cuda_compat.py)
    assert any("cuda-compat-13-0" in r for r in runs)
    assert "rm -rf /root/.cache" in install


def test_non_root_user_and_sagemaker_environment(commands):
    (user,) = by_cmd(commands, "USER")
    assert user.value[0] not in ("root", "0")
    env = {}
    for c in by_cmd(commands, "ENV"):
        env.update(dict(zip(c.value[::2], c.value[1::2], strict=True)))
    assert env["SAGEMAKER_MULTI_MODEL"] == "true"
    assert env["SAGEMAKER_BIND_TO_PORT"] == "8080"
    assert env["SPLEEN_BIND_HOST"] == "0.0.0.0"  # inside the container; the host default is 127.0.0.1
    assert env["PIP_NO_CACHE_DIR"] == "1"
    assert [c.value for c in by_cmd(commands, "EXPOSE")] == [("8080",)]


def test_dockerignore_keeps_tests_weights_and_caches_out():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for entry in (".git", ".venv", "tests", "build", "**/__pycache__", "model/spleen_ct_segmentation/models"):
        assert entry in ignored
    # ... but never what the install script and the entrypoint need.
    for needed in (
        "container",
        "scripts",
        "requirements.txt",
        "requirements.lock",
        "pyproject.toml",
        "app",
        "ahi_connector",
        "model",
    ):
        assert needed not in ignored


SHIM = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$SHIM_LOG"
case "$(basename "$0") $1 $2" in
  "aws sts get-caller-identity") echo 111122223333 ;;
  "aws ecr get-login-password") echo secret-token ;;
  "aws ecr describe-repositories") exit 254 ;;
  "docker login"*) read -r pw; echo "stdin=$pw" >> "$SHIM_LOG" ;;
esac
"""


def run_buildspec(tmp_path: Path, extra_env: dict[str, str]) -> list[str]:
    spec = yaml.safe_load((ROOT / "buildspec.yml").read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("aws", "docker"):
        (bin_dir / tool).write_text(SHIM)
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "calls.log"
    script = ["set -eo pipefail"]
    for name, value in spec["env"]["variables"].items():
        script.append(f'{name}="${{{name}:-{value}}}"')
    for phase in ("pre_build", "build", "post_build"):
        script += spec["phases"][phase]["commands"]
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SHIM_LOG": str(log),
        "HOME": str(tmp_path),
        **extra_env,
    }
    subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, check=True, capture_output=True)
    return log.read_text().splitlines()


def test_buildspec_phases_and_artifacts():
    spec = yaml.safe_load((ROOT / "buildspec.yml").read_text())
    assert spec["version"] == 0.2
    assert list(spec["phases"]) == ["pre_build", "build", "post_build"]
    assert spec["artifacts"]["files"] == ["imagedefinitions.json"]
    assert "IMAGE_URI" in spec["env"]["exported-variables"]


def test_buildspec_logs_in_builds_tags_and_pushes(tmp_path):
    calls = run_buildspec(
        tmp_path,
        {"AWS_DEFAULT_REGION": "eu-west-1", "CODEBUILD_RESOLVED_SOURCE_VERSION": "0123456789abcdef0123"},
    )
    image = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/ahi-spleen-seg"
    assert "aws sts get-caller-identity --query Account --output text" in calls
    assert any(
        c.startswith("aws ecr create-repository --region eu-west-1 --repository-name ahi-spleen-seg")
        for c in calls
    )
    login = calls.index(
        "docker login --username AWS --password-stdin 111122223333.dkr.ecr.eu-west-1.amazonaws.com"
    )
    assert "aws ecr get-login-password --region eu-west-1" in calls
    assert "stdin=secret-token" in calls  # the password went through the pipe, not the command line
    build = calls.index(f"docker build --pull -t {image}:0123456789ab -t {image}:latest .")
    assert login < build
    assert calls[build + 1 :] == [f"docker push {image}:0123456789ab", f"docker push {image}:latest"]
    assert f"{image}:0123456789ab" in (tmp_path / "imagedefinitions.json").read_text()


def test_buildspec_honours_account_region_repository(tmp_path):
    calls = run_buildspec(
        tmp_path,
        {
            "ACCOUNT": "999988887777",
            "REGION": "us-west-2",
            "REPOSITORY": "custom-repo",
            "CODEBUILD_RESOLVED_SOURCE_VERSION": "fedcba9876543210",
        },
    )
    assert not any("sts" in c for c in calls)
    assert "docker push 999988887777.dkr.ecr.us-west-2.amazonaws.com/custom-repo:fedcba987654" in calls


def _pip_dry_run(env_value: str | None) -> subprocess.CompletedProcess[str]:
    import sys

    env = {k: v for k, v in os.environ.items() if k != "AHI_SPLEEN_SEG_PACKAGE"}
    if env_value is not None:
        env["AHI_SPLEEN_SEG_PACKAGE"] = env_value
    req = ROOT / "container" / "prebuilt" / "requirements.txt"
    argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "-r", str(req)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


def test_code_requirements_resolve_offline_against_the_project_pins():
    """What the prebuilt container pip-installs: satisfied by this environment (same pins), never torch."""
    lines = (ROOT / "container" / "prebuilt" / "requirements.txt").read_text().splitlines()
    reqs = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert reqs[0] == "${AHI_SPLEEN_SEG_PACKAGE}"
    assert not any(r.lower().startswith("torch") for r in reqs)
    done = _pip_dry_run("ahi-spleen-seg")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Requirement already satisfied: ahi-spleen-seg" in done.stdout
    assert "Would install" not in done.stdout  # nothing to download: the pins match requirements.txt


def test_code_requirements_need_the_package_variable():
    done = _pip_dry_run(None)
    assert done.returncode != 0
    assert "${AHI_SPLEEN_SEG_PACKAGE}" in done.stderr
