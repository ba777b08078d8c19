"""``deploy-trigger`` and its cleanup against a moto server (EventBridge, Lambda, SQS, IAM, SageMaker)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from scripts.aws.session import AwsCliError
from scripts.aws.trigger import code_sha256, package_zip
from tests.aws.conftest import BUCKET
from tests.aws.util import tags_of

NAME = "trg"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/trg:latest"
COMMON = ("--name", NAME, "--bucket", BUCKET)


@pytest.fixture
def async_endpoint(ahi_spleen, small_archive: Path) -> None:
    ahi_spleen("upload-model", *COMMON, "--archive", str(small_archive))
    ahi_spleen("deploy-async", *COMMON, "--create-roles", "--image", IMAGE, "--instance-type", "ml.m5.xlarge")


def test_deploy_trigger_wires_rule_function_and_dead_letter_queue_once(
    ahi_spleen, client, async_endpoint
) -> None:
    out = ahi_spleen(
        "deploy-trigger",
        *COMMON,
        "--create-roles",
        "--datastore-id",
        "a" * 32,
        "--output-s3-uri",
        f"s3://{BUCKET}/seg",
    )
    result = out["result"]

    sqs = client("sqs")
    url = sqs.get_queue_url(QueueName=f"{NAME}-trigger-dlq")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["QueueArn"] == result["queue_arn"]
    assert attrs["MessageRetentionPeriod"] == str(14 * 24 * 3600)
    policy = json.loads(attrs["Policy"])["Statement"][0]
    assert policy["Principal"] == {"Service": "events.amazonaws.com"}
    assert policy["Condition"]["ArnEquals"]["aws:SourceArn"] == result["rule_arn"]
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"]["ahi-spleen-project"] == NAME

    lam = client("lambda")
    function = lam.get_function(FunctionName=f"{NAME}-trigger")
    conf = function["Configuration"]
    assert conf["Handler"] == "trigger.handler.lambda_handler"
    assert conf["Role"].endswith(f":role/{NAME}-lambda")
    assert conf["CodeSha256"] == code_sha256(package_zip())
    assert conf["Environment"]["Variables"] == {
        "ENDPOINT_NAME": f"{NAME}-async",
        "REQUEST_BUCKET": BUCKET,
        "REQUEST_PREFIX": f"{NAME}/requests/",
        "OUTPUT_S3_URI": f"s3://{BUCKET}/seg",
    }
    assert function["Tags"]["ahi-spleen-project"] == NAME
    invoke_config = lam.get_function_event_invoke_config(FunctionName=f"{NAME}-trigger")
    assert invoke_config["MaximumRetryAttempts"] == 2
    assert invoke_config["DestinationConfig"]["OnFailure"]["Destination"] == result["queue_arn"]
    statement = json.loads(lam.get_policy(FunctionName=f"{NAME}-trigger")["Policy"])["Statement"][0]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert result["rule_arn"] in json.dumps(statement["Condition"])

    events = client("events")
    rule = events.describe_rule(Name=f"{NAME}-ahi-events")
    assert json.loads(rule["EventPattern"]) == {
        "source": ["aws.medical-imaging"],
        "detail-type": ["Image Set Created"],
        "detail": {"datastoreId": ["a" * 32]},
    }
    assert rule["State"] == "ENABLED"
    assert (
        tags_of(events.list_tags_for_resource(ResourceARN=rule["Arn"])["Tags"])["ahi-spleen-project"] == NAME
    )
    (target,) = events.list_targets_by_rule(Rule=f"{NAME}-ahi-events")["Targets"]
    assert target["Arn"] == conf["FunctionArn"]
    assert target["DeadLetterConfig"]["Arn"] == result["queue_arn"]

    role = client("iam").get_role(RoleName=f"{NAME}-lambda")["Role"]
    assert "lambda.amazonaws.com" in json.dumps(role["AssumeRolePolicyDocument"])

    again = ahi_spleen(
        "deploy-trigger", *COMMON, "--datastore-id", "a" * 32, "--output-s3-uri", f"s3://{BUCKET}/seg"
    )
    assert again["changes"] == []

    changed = ahi_spleen(
        "deploy-trigger", *COMMON, "--event", "Image Set Created", "--event", "Import Job Completed"
    )
    ops = {c.split("(")[0] for c in changed["changes"]}
    assert "events.put_rule" in ops and "lambda.update_function_configuration" in ops
    assert "lambda.create_function" not in ops

    cleaned = ahi_spleen("cleanup", *COMMON, "--roles")
    deleted = " | ".join(cleaned["result"]["deleted"])
    for what in (
        f"rule {NAME}-ahi-events",
        f"function {NAME}-trigger",
        f"queue {NAME}-trigger-dlq",
        f"{NAME}-lambda",
    ):
        assert what in deleted
    assert events.list_rules(NamePrefix=NAME)["Rules"] == []
    assert lam.list_functions()["Functions"] == []
    assert sqs.list_queues().get("QueueUrls", []) == []
    assert ahi_spleen("cleanup", *COMMON, "--roles")["changes"] == []


def test_deploy_trigger_without_async_endpoint_says_to_deploy_it(ahi_spleen, client) -> None:
    with pytest.raises(AwsCliError, match=rf"async endpoint {NAME}-async does not exist.*deploy-async"):
        ahi_spleen("deploy-trigger", *COMMON, "--create-roles")
    assert client("lambda").list_functions()["Functions"] == []
    assert client("sqs").list_queues().get("QueueUrls", []) == []


def test_deploy_trigger_dry_run_lists_the_calls_and_creates_nothing(
    ahi_spleen, client, async_endpoint
) -> None:
    out = ahi_spleen("deploy-trigger", *COMMON, "--create-roles", "--dry-run")
    ops = [c.split("(")[0] for c in out["would_call"]]
    for op in (
        "sqs.create_queue",
        "lambda.create_function",
        "lambda.put_function_event_invoke_config",
        "events.put_rule",
        "lambda.add_permission",
        "events.put_targets",
    ):
        assert op in ops
    assert client("lambda").list_functions()["Functions"] == []


def test_lambda_package_is_reproducible_and_self_contained(tmp_path: Path) -> None:
    data = package_zip()
    assert data == package_zip()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path)
    assert "trigger/handler.py" in names
    assert {n.split("/")[0] for n in names} == {"trigger", "ahi_connector"}
    # with the zip first on the path, every project module the handler loads comes from the zip (Lambda's
    # runtime provides boto3); a module missing from LAMBDA_FILES fails the import here
    probe = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import trigger.handler, trigger.events; "
        "mods = [m.__file__ for n, m in sys.modules.items() "
        "if n.split('.')[0] in ('trigger', 'ahi_connector')]; "
        f"print(all(f.startswith({str(tmp_path)!r}) for f in mods), len(mods))"
    )
    out = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, check=True)
    ok, count = out.stdout.split()
    assert ok == "True" and int(count) >= 6, out.stdout
