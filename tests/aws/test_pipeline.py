"""``pipeline`` and ``build`` against a moto server: ECR, CodeBuild, CodePipeline, idempotency, status."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from scripts.aws.session import AwsCliError
from tests.aws.conftest import BUCKET
from tests.aws.util import tags_of

NAME = "pipe"


def _pipeline(ahi_spleen, *extra: str) -> dict:
    return ahi_spleen(
        "pipeline",
        "--name",
        NAME,
        "--bucket",
        BUCKET,
        "--create-roles",
        "--build-env",
        "BASE_IMAGE=x:1",
        *extra,
    )


def test_pipeline_creates_repository_project_and_pipeline_once(ahi_spleen, client) -> None:
    out = _pipeline(ahi_spleen)
    assert out["result"]["repository_uri"].endswith(f"/{NAME}")

    ecr = client("ecr")
    repo = ecr.describe_repositories(repositoryNames=[NAME])["repositories"][0]
    assert repo["imageScanningConfiguration"]["scanOnPush"] is True
    assert (
        tags_of(ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"])["ahi-spleen-project"]
        == NAME
    )

    project = client("codebuild").batch_get_projects(names=[f"{NAME}-build"])["projects"][0]
    env = project["environment"]
    assert env["privilegedMode"] is True
    assert env["type"] == "LINUX_CONTAINER"
    variables = {v["name"]: v["value"] for v in env["environmentVariables"]}
    assert variables["IMAGE_REPO_URI"] == repo["repositoryUri"]
    assert variables["IMAGE_TAG"] == "latest"
    assert variables["BASE_IMAGE"] == "x:1"
    assert variables["AWS_DEFAULT_REGION"] == "us-east-1"
    assert project["source"]["buildspec"] == "buildspec.yml"
    assert project["serviceRole"].endswith(f":role/{NAME}-codebuild")
    assert tags_of(project["tags"])["ahi-spleen-project"] == NAME

    pipeline = client("codepipeline").get_pipeline(name=f"{NAME}-pipeline")["pipeline"]
    source, build = pipeline["stages"]
    assert source["actions"][0]["actionTypeId"]["provider"] == "S3"
    assert source["actions"][0]["configuration"]["S3Bucket"] == BUCKET
    assert source["actions"][0]["configuration"]["S3ObjectKey"] == f"{NAME}/source/source.zip"
    assert build["actions"][0]["actionTypeId"]["provider"] == "CodeBuild"
    assert build["actions"][0]["configuration"]["ProjectName"] == f"{NAME}-build"
    assert pipeline["artifactStore"] == {"type": "S3", "location": BUCKET}
    # the S3 source action needs a versioned bucket
    assert client("s3").get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"

    trust = client("iam").get_role(RoleName=f"{NAME}-codepipeline")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"]["Service"] == "codepipeline.amazonaws.com"

    # a second run finds everything and changes nothing
    second = _pipeline(ahi_spleen)
    assert second["changes"] == []
    assert second["result"] == out["result"]
    assert (
        client("codepipeline").get_pipeline(name=f"{NAME}-pipeline")["pipeline"]["version"]
        == pipeline["version"]
    )


def test_pipeline_with_changed_stage_settings_updates_the_pipeline(ahi_spleen, client) -> None:
    _pipeline(ahi_spleen)
    cp = client("codepipeline")
    declaration = cp.get_pipeline(name=f"{NAME}-pipeline")["pipeline"]
    declaration["stages"][1]["actions"][0]["configuration"]["ProjectName"] = "somebody-else"
    cp.update_pipeline(pipeline=declaration)
    out = _pipeline(ahi_spleen)
    assert [c.split("(")[0] for c in out["changes"]] == ["codepipeline.update_pipeline"]
    action = cp.get_pipeline(name=f"{NAME}-pipeline")["pipeline"]["stages"][1]["actions"][0]
    assert action["configuration"]["ProjectName"] == f"{NAME}-build"


def test_pipeline_without_roles_names_the_missing_role(ahi_spleen, client) -> None:
    # roles are checked before the repository, project and pipeline are created
    with pytest.raises(AwsCliError, match=rf"IAM role '{NAME}-codebuild'.*does not exist.*--create-roles"):
        ahi_spleen("pipeline", "--name", NAME, "--bucket", BUCKET)
    assert client("ecr").describe_repositories()["repositories"] == []


def test_role_that_trusts_another_service_is_refused(ahi_spleen, client) -> None:
    client("iam").create_role(
        RoleName=f"{NAME}-codebuild",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "ec2.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )
    with pytest.raises(AwsCliError, match=r"does not trust codebuild.amazonaws.com.*ec2.amazonaws.com"):
        ahi_spleen("pipeline", "--name", NAME, "--bucket", BUCKET, "--create-roles")


def _source_tree(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "buildspec.yml").write_text("version: 0.2\nphases:\n  build:\n    commands: [docker build .]\n")
    (root / "Dockerfile").write_text("FROM scratch\n")
    (root / ".venv").mkdir()
    (root / ".venv" / "big").write_text("must not be uploaded")
    return root


def test_build_uploads_source_and_runs_the_pipeline(ahi_spleen, client, tmp_path: Path) -> None:
    _pipeline(ahi_spleen)
    out = ahi_spleen("build", "--name", NAME, "--bucket", BUCKET, "--source-dir", str(_source_tree(tmp_path)))
    assert out["result"]["kind"] == "pipeline"
    assert out["result"]["status"] == "Succeeded"
    body = client("s3").get_object(Bucket=BUCKET, Key=f"{NAME}/source/source.zip")["Body"].read()
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert sorted(names) == ["Dockerfile", "buildspec.yml"]
    executions = client("codepipeline").list_pipeline_executions(pipelineName=f"{NAME}-pipeline")
    assert [e["pipelineExecutionId"] for e in executions["pipelineExecutionSummaries"]] == [
        out["result"]["id"]
    ]

    again = ahi_spleen("build", "--name", NAME, "--bucket", BUCKET, "--source-dir", str(tmp_path / "repo"))
    # same source: not uploaded again, only a new execution is started
    assert [c.split("(")[0] for c in again["changes"]] == ["codepipeline.start_pipeline_execution"]


def test_build_direct_starts_codebuild_and_reports_phases(ahi_spleen, client, tmp_path: Path) -> None:
    _pipeline(ahi_spleen)
    src = str(_source_tree(tmp_path))
    out = ahi_spleen("build", "--name", NAME, "--bucket", BUCKET, "--direct", "--source-dir", src)
    assert out["result"]["kind"] == "codebuild"
    assert out["result"]["status"] == "SUCCEEDED"
    assert "BUILD:SUCCEEDED" in out["result"]["phases"]
    assert client("codebuild").list_builds_for_project(projectName=f"{NAME}-build")["ids"] == [
        out["result"]["id"]
    ]


def test_build_source_without_buildspec_is_refused(ahi_spleen, tmp_path: Path) -> None:
    _pipeline(ahi_spleen)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AwsCliError, match=r"has no buildspec.yml; pass the repository root"):
        ahi_spleen("build", "--name", NAME, "--bucket", BUCKET, "--source-dir", str(tmp_path / "empty"))


def test_build_without_any_uploaded_source_says_to_pass_source_dir(ahi_spleen) -> None:
    _pipeline(ahi_spleen)
    with pytest.raises(AwsCliError, match=rf"no source archive at s3://{BUCKET}/{NAME}/source/source.zip"):
        ahi_spleen("build", "--name", NAME, "--bucket", BUCKET)


def test_profile_supplies_credentials_and_region(aws_env: str, client, tmp_path: Path, monkeypatch) -> None:
    from scripts.aws import cli

    config = tmp_path / "aws-config"
    config.write_text("[profile moto]\nregion = us-east-1\n")
    credentials = tmp_path / "aws-credentials"
    credentials.write_text("[moto]\naws_access_key_id = fromprofile\naws_secret_access_key = secret\n")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    code, text = cli.run(
        [
            "pipeline",
            "--name",
            NAME,
            "--bucket",
            BUCKET,
            "--create-roles",
            "--profile",
            "moto",
            "--endpoint-url",
            aws_env,
            "--no-progress",
        ]
    )
    assert code == 0, text
    assert json.loads(text)["result"]["repository_uri"].startswith("123456789012.dkr.ecr.us-east-1.")
