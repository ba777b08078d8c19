"""Image build pipeline: ECR repository, CodeBuild project (privileged docker build), CodePipeline S3 →
CodeBuild.

``ensure_pipeline`` creates what is missing and updates what differs from the wanted settings; a re-run with
the same settings makes no changes. ``start_build`` uploads the source archive (optional), starts the pipeline
(or the CodeBuild project directly) and waits, showing the status.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.aws.names import Names
from scripts.aws.session import Aws, AwsCliError, error_code, subset_equal, tag_list, wait_for
from scripts.aws.state import State
from scripts.aws.storage import SHA256_META

logger = logging.getLogger(__name__)

DEFAULT_BUILD_IMAGE = "aws/codebuild/amazonlinux2-x86_64-standard:5.0"
DEFAULT_COMPUTE_TYPE = "BUILD_GENERAL1_LARGE"
DEFAULT_BUILDSPEC = "buildspec.yml"
SOURCE_EXCLUDES = {".git", ".venv", "build", "__pycache__", ".pytest_cache", ".ruff_cache", "data", "runs"}


@dataclass(frozen=True)
class PipelineSettings:
    bucket: str
    codebuild_role_arn: str
    pipeline_role_arn: str
    buildspec: str = DEFAULT_BUILDSPEC
    image_tag: str = "latest"
    build_image: str = DEFAULT_BUILD_IMAGE
    compute_type: str = DEFAULT_COMPUTE_TYPE
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineResources:
    repository_uri: str
    project_arn: str
    pipeline_name: str


def ensure_repository(aws: Aws, names: Names) -> str:
    """The ECR repository (scan on push); return its URI."""
    ecr = aws.client("ecr")
    try:
        repo = ecr.describe_repositories(repositoryNames=[names.ecr_repository])["repositories"][0]
        return str(repo["repositoryUri"])
    except Exception as exc:
        if error_code(exc) != "RepositoryNotFoundException":
            raise
    created = aws.call(
        "ecr",
        "create_repository",
        repositoryName=names.ecr_repository,
        imageScanningConfiguration={"scanOnPush": True},
        imageTagMutability="MUTABLE",
        tags=tag_list(names.name),
    )
    if aws.dry_run:
        return f"<account>.dkr.ecr.{aws.region}.amazonaws.com/{names.ecr_repository}"
    return str(created["repository"]["repositoryUri"])


def repository_uri(aws: Aws, names: Names) -> str:
    """URI of an existing repository (raises with the fix when ``pipeline`` has not been run)."""
    try:
        repo = aws.client("ecr").describe_repositories(repositoryNames=[names.ecr_repository])[
            "repositories"
        ][0]
    except Exception as exc:
        if error_code(exc) == "RepositoryNotFoundException":
            raise AwsCliError(
                f"ECR repository {names.ecr_repository!r} does not exist: run `ahi-spleen pipeline` and "
                "`ahi-spleen build` first, or pass --image"
            ) from exc
        raise
    return str(repo["repositoryUri"])


def project_spec(aws: Aws, names: Names, settings: PipelineSettings, repo_uri: str) -> dict[str, Any]:
    """The CodeBuild project as CreateProject parameters (pipeline source; ``build --direct`` overrides it
    to S3)."""
    env = {
        "AWS_DEFAULT_REGION": aws.region,
        "IMAGE_REPO_URI": repo_uri,
        "IMAGE_REPO_NAME": names.ecr_repository,
        "IMAGE_TAG": settings.image_tag,
        **settings.env,
    }
    return {
        "name": names.codebuild_project,
        "description": f"docker build + push of {names.ecr_repository} (ahi-spleen)",
        # CodePipeline ignores a CODEPIPELINE source's location; it records where `build --direct` reads
        "source": {
            "type": "CODEPIPELINE",
            "location": f"{settings.bucket}/{names.source_key}",
            "buildspec": settings.buildspec,
        },
        # likewise the artifacts location (the image goes to ECR; the build has no artifacts)
        "artifacts": {"type": "CODEPIPELINE", "location": settings.bucket},
        "environment": {
            "type": "LINUX_CONTAINER",
            "image": settings.build_image,
            "computeType": settings.compute_type,
            "privilegedMode": True,
            "environmentVariables": [
                {"name": k, "value": v, "type": "PLAINTEXT"} for k, v in sorted(env.items())
            ],
        },
        "serviceRole": settings.codebuild_role_arn,
        "timeoutInMinutes": 60,
    }


def ensure_project(aws: Aws, names: Names, spec: dict[str, Any]) -> str:
    found = aws.client("codebuild").batch_get_projects(names=[spec["name"]])["projects"]
    if not found:
        created = aws.call("codebuild", "create_project", **spec, tags=tag_list(names.name, "key", "value"))
        return str(created["project"]["arn"]) if "project" in created else f"<arn of {spec['name']}>"
    current = found[0]
    # AWS ignores (and may not echo) the locations of CODEPIPELINE sources/artifacts: compare without them
    wanted = {
        **spec,
        "source": {k: v for k, v in spec["source"].items() if k != "location"},
        "artifacts": {k: v for k, v in spec["artifacts"].items() if k != "location"},
    }
    if not subset_equal(wanted, current):
        logger.info("CodeBuild project %s differs from the wanted settings; updating", spec["name"])
        aws.call("codebuild", "update_project", **spec)
    return str(current["arn"])


def pipeline_declaration(names: Names, settings: PipelineSettings) -> dict[str, Any]:
    return {
        "name": names.pipeline,
        "roleArn": settings.pipeline_role_arn,
        "artifactStore": {"type": "S3", "location": settings.bucket},
        "stages": [
            {
                "name": "Source",
                "actions": [
                    {
                        "name": "Source",
                        "actionTypeId": {
                            "category": "Source",
                            "owner": "AWS",
                            "provider": "S3",
                            "version": "1",
                        },
                        "configuration": {
                            "S3Bucket": settings.bucket,
                            "S3ObjectKey": names.source_key,
                            "PollForSourceChanges": "false",
                        },
                        "outputArtifacts": [{"name": "SourceOutput"}],
                        "runOrder": 1,
                    }
                ],
            },
            {
                "name": "Build",
                "actions": [
                    {
                        "name": "DockerBuild",
                        "actionTypeId": {
                            "category": "Build",
                            "owner": "AWS",
                            "provider": "CodeBuild",
                            "version": "1",
                        },
                        "configuration": {"ProjectName": names.codebuild_project},
                        "inputArtifacts": [{"name": "SourceOutput"}],
                        "runOrder": 1,
                    }
                ],
            },
        ],
    }


def ensure_codepipeline(aws: Aws, names: Names, declaration: dict[str, Any]) -> None:
    cp = aws.client("codepipeline")
    try:
        current = cp.get_pipeline(name=declaration["name"])["pipeline"]
    except Exception as exc:
        if error_code(exc) != "PipelineNotFoundException":
            raise
        aws.call(
            "codepipeline", "create_pipeline", pipeline=declaration, tags=tag_list(names.name, "key", "value")
        )
        return
    if not subset_equal(declaration, current):
        logger.info("pipeline %s differs from the wanted settings; updating", declaration["name"])
        aws.call("codepipeline", "update_pipeline", pipeline={**declaration, "version": current["version"]})


def ensure_pipeline(aws: Aws, names: Names, settings: PipelineSettings, state: State) -> PipelineResources:
    """ECR repository, CodeBuild project and CodePipeline (its artefacts land in
    ``s3://bucket/<pipeline[:20]>/``)."""
    repo_uri = ensure_repository(aws, names)
    if not aws.dry_run:
        state.add("s3_prefixes", f"s3://{settings.bucket}/{names.pipeline[:20]}/")
    project_arn = ensure_project(aws, names, project_spec(aws, names, settings, repo_uri))
    ensure_codepipeline(aws, names, pipeline_declaration(names, settings))
    return PipelineResources(repo_uri, project_arn, names.pipeline)


def source_archive(root: Path, buildspec: str = DEFAULT_BUILDSPEC) -> bytes:
    """Zip of the source tree under ``root`` (without venvs, build outputs and caches), byte-stable."""
    if not (root / buildspec).is_file():
        raise AwsCliError(
            f"source directory {str(root)!r} has no {buildspec}; pass the repository root as --source-dir "
            "(or the buildspec path inside it as --buildspec)"
        )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(
                d for d in dirnames if d not in SOURCE_EXCLUDES and not d.endswith(".egg-info")
            )
            for filename in sorted(filenames):
                path = Path(dirpath) / filename
                info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=(2024, 1, 1, 0, 0, 0))
                info.external_attr = (path.stat().st_mode & 0o777) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
    return buf.getvalue()


@dataclass(frozen=True)
class BuildOutcome:
    kind: str  # "pipeline" or "codebuild"
    id: str
    status: str
    phases: list[str]


def upload_source(
    aws: Aws, names: Names, bucket: str, source_dir: Path, state: State, buildspec: str = DEFAULT_BUILDSPEC
) -> None:
    """Upload the zipped source tree where the pipeline's S3 source action (and ``build --direct``) reads
    it."""
    data = source_archive(source_dir, buildspec)
    digest = hashlib.sha256(data).hexdigest()
    if not aws.dry_run:
        state.add("s3_prefixes", f"s3://{bucket}/{names.s3_root}")
    try:
        head = aws.client("s3").head_object(Bucket=bucket, Key=names.source_key)
        if head.get("Metadata", {}).get(SHA256_META) == digest:
            logger.info("source archive unchanged (sha256 %s); not uploading", digest[:12])
            return
    except Exception as exc:
        if error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
            raise
    aws.call(
        "s3", "put_object", Bucket=bucket, Key=names.source_key, Body=data, Metadata={SHA256_META: digest}
    )


def require_source(aws: Aws, names: Names, bucket: str) -> None:
    """Fail with the fix when no source archive has been uploaded yet (the pipeline would fail later)."""
    try:
        aws.client("s3").head_object(Bucket=bucket, Key=names.source_key)
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
            raise AwsCliError(
                f"no source archive at s3://{bucket}/{names.source_key}: "
                "pass --source-dir (the repository root)"
            ) from exc
        raise


def start_build(
    aws: Aws, names: Names, bucket: str, direct: bool = False, timeout_s: float = 3600.0
) -> BuildOutcome:
    """Start the pipeline (or, with ``direct``, the CodeBuild project on the S3 source) and wait for it to
    finish."""
    if direct:
        build_id = aws.call(
            "codebuild",
            "start_build",
            projectName=names.codebuild_project,
            sourceTypeOverride="S3",
            sourceLocationOverride=f"{bucket}/{names.source_key}",
            artifactsOverride={"type": "NO_ARTIFACTS"},
        )
        if aws.dry_run:
            return BuildOutcome("codebuild", "<dry-run>", "NOT_STARTED", [])
        return _wait_codebuild(aws, build_id["build"]["id"], timeout_s)
    started = aws.call("codepipeline", "start_pipeline_execution", name=names.pipeline)
    if aws.dry_run:
        return BuildOutcome("pipeline", "<dry-run>", "NOT_STARTED", [])
    execution_id = started["pipelineExecutionId"]
    cp = aws.client("codepipeline")

    def status() -> str:
        return str(
            cp.get_pipeline_execution(pipelineName=names.pipeline, pipelineExecutionId=execution_id)[
                "pipelineExecution"
            ]["status"]
        )

    final = wait_for(
        status,
        what=f"pipeline {names.pipeline} execution {execution_id}",
        done={"Succeeded"},
        failed={"Failed", "Stopped", "Superseded", "Cancelled"},
        timeout_s=timeout_s,
        progress=aws.settings.progress_mode,
    )
    return BuildOutcome("pipeline", execution_id, final, latest_build_phases(aws, names))


def _wait_codebuild(aws: Aws, build_id: str, timeout_s: float) -> BuildOutcome:
    cb = aws.client("codebuild")
    last: dict[str, Any] = {}

    def status() -> str:
        last.update(cb.batch_get_builds(ids=[build_id])["builds"][0])
        return f"{last['buildStatus']}"

    def detail() -> str:
        return f"phases {_phase_summary(last)}; logs: {last.get('logs', {}).get('deepLink', 'n/a')}"

    final = wait_for(
        status,
        what=f"CodeBuild build {build_id}",
        done={"SUCCEEDED"},
        failed={"FAILED", "FAULT", "STOPPED", "TIMED_OUT"},
        timeout_s=timeout_s,
        progress=aws.settings.progress_mode,
        failure_detail=detail,
    )
    return BuildOutcome("codebuild", build_id, final, _phase_summary(last))


def _phase_summary(build: Mapping[str, Any]) -> list[str]:
    return [f"{p['phaseType']}:{p.get('phaseStatus', '-')}" for p in build.get("phases", [])]


def latest_build_phases(aws: Aws, names: Names) -> list[str]:
    """Phases of the project's most recent CodeBuild build ([] when it has none)."""
    cb = aws.client("codebuild")
    ids = cb.list_builds_for_project(projectName=names.codebuild_project, sortOrder="DESCENDING").get(
        "ids", []
    )
    if not ids:
        return []
    return _phase_summary(cb.batch_get_builds(ids=ids[:1])["builds"][0])
