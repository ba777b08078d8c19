"""``deploy-trigger``: every new CT image set in HealthImaging goes to the async endpoint, once per version.

    AHI ──event──▶ EventBridge rule <name>-ahi-events ──▶ Lambda <name>-trigger ──▶ InvokeEndpointAsync
                        └─ undeliverable ─┐            └─ failed after retries ─┐
                                          ▼                                     ▼
                                  SQS <name>-trigger-dlq  (both dead letters land here, 14 days)

The function is the project's own :mod:`trigger` package (with the connector modules it uses), zipped by
:func:`package_zip` (deterministic bytes, so re-running compares the code hash and changes nothing). Requests
and their markers live under ``s3://<bucket>/<name>/requests/`` (see :mod:`trigger.submission`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.aws.deploy import describe_endpoint
from scripts.aws.names import Names
from scripts.aws.session import Aws, AwsCliError, error_code, is_ours, subset_equal, tag_map
from scripts.aws.state import State
from trigger.events import HANDLED, IMAGE_SET_CREATED, SOURCE

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
#: The Lambda deployment package: the trigger package and the connector modules it imports (all boto3-only;
#: ``ahi_connector/__init__`` loads its heavy submodules lazily, so they are not needed).
LAMBDA_FILES = (
    "trigger/*.py",
    "ahi_connector/__init__.py",
    "ahi_connector/errors.py",
    "ahi_connector/client.py",
    "ahi_connector/import_jobs.py",
    "ahi_connector/s3uri.py",
)
RUNTIME = "python3.13"
HANDLER = "trigger.handler.lambda_handler"
TIMEOUT_S = 300
MEMORY_MB = 256
#: Lambda retries a failed asynchronous invocation this often before the event goes to the dead-letter queue.
LAMBDA_RETRIES = 2
DLQ_RETENTION_S = 14 * 24 * 3600
STATEMENT_ID = "ahi-spleen-eventbridge-invoke"
TARGET_ID = "ahi-spleen-trigger"


def package_zip(root: Path = ROOT) -> bytes:
    """The Lambda deployment package (:data:`LAMBDA_FILES`) with fixed timestamps and modes: same bytes."""
    files = sorted({path for pattern in LAMBDA_FILES for path in root.glob(pattern)})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return buffer.getvalue()


def code_sha256(data: bytes) -> str:
    """Lambda's ``CodeSha256``: base64 of the zip's SHA-256."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@dataclass(frozen=True)
class TriggerSettings:
    bucket: str
    endpoint_name: str
    role_arn: str
    detail_types: tuple[str, ...] = (IMAGE_SET_CREATED,)
    datastore_ids: tuple[str, ...] = ()
    output_s3_uri: str | None = None
    min_slices: int | None = None
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [d for d in self.detail_types if d not in HANDLED]
        if unknown or not self.detail_types:
            raise AwsCliError(
                f"--event {unknown or '(none)'} is not one the handler acts on; choose from {list(HANDLED)}"
            )


@dataclass(frozen=True)
class TriggerResult:
    function_arn: str
    rule_arn: str
    queue_url: str
    queue_arn: str
    event_pattern: dict[str, Any]
    request_prefix: str


def event_pattern(settings: TriggerSettings) -> dict[str, Any]:
    pattern: dict[str, Any] = {"source": [SOURCE], "detail-type": list(settings.detail_types)}
    if settings.datastore_ids:
        pattern["detail"] = {"datastoreId": list(settings.datastore_ids)}
    return pattern


def function_environment(names: Names, settings: TriggerSettings) -> dict[str, str]:
    env = {
        "ENDPOINT_NAME": settings.endpoint_name,
        "REQUEST_BUCKET": settings.bucket,
        "REQUEST_PREFIX": names.request_prefix,
    }
    if settings.output_s3_uri:
        env["OUTPUT_S3_URI"] = settings.output_s3_uri
    if settings.min_slices is not None:
        env["MIN_SLICES"] = str(settings.min_slices)
    return {**env, **settings.env}


# ---- SQS dead-letter queue -------------------------------------------------------------------------------
def queue_url(aws: Aws, name: str) -> str | None:
    try:
        return str(aws.client("sqs").get_queue_url(QueueName=name)["QueueUrl"])
    except Exception as exc:
        if error_code(exc) in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            return None
        raise


def queue_policy(queue_arn: str, rule_arn: str) -> dict[str, Any]:
    """EventBridge may send undeliverable events of our rule (and only those) to the queue."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "eventbridge-dead-letters",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
            }
        ],
    }


def ensure_queue(aws: Aws, names: Names) -> tuple[str, str]:
    """The dead-letter queue's URL and ARN (created, tagged, 14 days retention)."""
    url = queue_url(aws, names.trigger_dlq)
    if url is None:
        created = aws.call(
            "sqs",
            "create_queue",
            QueueName=names.trigger_dlq,
            Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_S)},
            tags=tag_map(names.name),
        )
        url = str(created["QueueUrl"])
        if aws.dry_run:
            return url, f"arn:aws:sqs:{aws.region}:<account>:{names.trigger_dlq}"
    arn = aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return url, str(arn)


def ensure_queue_policy(aws: Aws, url: str, queue_arn: str, rule_arn: str) -> None:
    wanted = queue_policy(queue_arn, rule_arn)
    if not aws.dry_run:
        attrs = aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])
        current = attrs.get("Attributes", {}).get("Policy")
        if current and subset_equal(wanted, json.loads(current)):
            return
    aws.call("sqs", "set_queue_attributes", QueueUrl=url, Attributes={"Policy": json.dumps(wanted)})


# ---- Lambda ----------------------------------------------------------------------------------------------
def get_function(aws: Aws, name: str) -> dict[str, Any] | None:
    try:
        return dict(aws.client("lambda").get_function(FunctionName=name))
    except Exception as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise


def _function_config(names: Names, settings: TriggerSettings) -> dict[str, Any]:
    return {
        "Runtime": RUNTIME,
        "Role": settings.role_arn,
        "Handler": HANDLER,
        "Timeout": TIMEOUT_S,
        "MemorySize": MEMORY_MB,
        "Description": f"ahi-spleen {names.name}: AHI events -> {settings.endpoint_name} (async)",
        "Environment": {"Variables": function_environment(names, settings)},
    }


def ensure_function(aws: Aws, names: Names, settings: TriggerSettings, force: bool) -> str:
    code = package_zip()
    config = _function_config(names, settings)
    current = get_function(aws, names.trigger_function)
    if current is None:
        created = aws.call(
            "lambda",
            "create_function",
            FunctionName=names.trigger_function,
            Code={"ZipFile": code},
            Publish=False,
            Tags=tag_map(names.name),
            **config,
        )
        arn = str(created["FunctionArn"])
        if not aws.dry_run:
            _wait_function(aws, names.trigger_function)
        return arn
    arn = str(current["Configuration"]["FunctionArn"])
    if not force and not is_ours(current.get("Tags") or {}, names.name):
        raise AwsCliError(
            f"Lambda function {names.trigger_function} exists but was not created by ahi-spleen --name "
            f"{names.name} (no project tag); choose another --name or pass --force to take it over"
        )
    if current["Configuration"].get("CodeSha256") != code_sha256(code):
        aws.call("lambda", "update_function_code", FunctionName=names.trigger_function, ZipFile=code)
        if not aws.dry_run:
            _wait_function(aws, names.trigger_function)
    env_now = (current["Configuration"].get("Environment") or {}).get("Variables") or {}
    if not subset_equal(config, current["Configuration"]) or env_now != config["Environment"]["Variables"]:
        aws.call("lambda", "update_function_configuration", FunctionName=names.trigger_function, **config)
        if not aws.dry_run:
            _wait_function(aws, names.trigger_function)
    return arn


def _wait_function(aws: Aws, name: str) -> None:
    from scripts.aws.session import wait_for

    def status() -> str:
        conf = aws.client("lambda").get_function_configuration(FunctionName=name)
        return f"{conf.get('State', 'Active')}/{conf.get('LastUpdateStatus', 'Successful')}"

    wait_for(
        status,
        what=f"Lambda function {name}",
        done={"Active/Successful"},
        failed={"Failed/Failed", "Active/Failed", "Inactive/Failed"},
        timeout_s=300,
        interval_s=5.0,
        progress=aws.settings.progress_mode,
    )


def ensure_invoke_config(aws: Aws, names: Names, queue_arn: str) -> None:
    """Lambda retries a failed event LAMBDA_RETRIES times, then sends it (with the error) to the queue."""
    wanted = {
        "MaximumRetryAttempts": LAMBDA_RETRIES,
        "MaximumEventAgeInSeconds": 6 * 3600,
        "DestinationConfig": {"OnFailure": {"Destination": queue_arn}},
    }
    if not aws.dry_run:
        try:
            current = aws.client("lambda").get_function_event_invoke_config(
                FunctionName=names.trigger_function
            )
            if subset_equal(wanted, current):
                return
        except Exception as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
    aws.call("lambda", "put_function_event_invoke_config", FunctionName=names.trigger_function, **wanted)


def ensure_permission(aws: Aws, names: Names, rule_arn: str) -> None:
    """EventBridge (this rule only) may invoke the function."""
    if not aws.dry_run:
        try:
            policy = json.loads(
                aws.client("lambda").get_policy(FunctionName=names.trigger_function)["Policy"]
            )
            for statement in policy.get("Statement", []):
                if statement.get("Sid") == STATEMENT_ID:
                    if json.dumps(statement).find(rule_arn) >= 0:
                        return
                    aws.call(
                        "lambda",
                        "remove_permission",
                        FunctionName=names.trigger_function,
                        StatementId=STATEMENT_ID,
                    )
        except Exception as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
    aws.call(
        "lambda",
        "add_permission",
        FunctionName=names.trigger_function,
        StatementId=STATEMENT_ID,
        Action="lambda:InvokeFunction",
        Principal="events.amazonaws.com",
        SourceArn=rule_arn,
    )


# ---- EventBridge -----------------------------------------------------------------------------------------
def describe_rule(aws: Aws, name: str) -> dict[str, Any] | None:
    try:
        return dict(aws.client("events").describe_rule(Name=name))
    except Exception as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise


def ensure_rule(aws: Aws, names: Names, pattern: dict[str, Any], force: bool) -> str:
    current = describe_rule(aws, names.trigger_rule)
    description = f"ahi-spleen {names.name}: AWS HealthImaging events to {names.trigger_function}"
    if current is not None:
        tags = aws.client("events").list_tags_for_resource(ResourceARN=current["Arn"])["Tags"]
        if not force and not is_ours(tags, names.name):
            raise AwsCliError(
                f"EventBridge rule {names.trigger_rule} exists but was not created by ahi-spleen --name "
                f"{names.name} (no project tag); choose another --name or pass --force"
            )
        same = (
            json.loads(current.get("EventPattern") or "{}") == pattern and current.get("State") == "ENABLED"
        )
        if same:
            return str(current["Arn"])
    put = aws.call(
        "events",
        "put_rule",
        Name=names.trigger_rule,
        EventPattern=json.dumps(pattern),
        State="ENABLED",
        Description=description,
        **(
            {"Tags": [{"Key": k, "Value": v} for k, v in tag_map(names.name).items()]}
            if current is None
            else {}
        ),
    )
    return str(put["RuleArn"])


def ensure_target(aws: Aws, names: Names, function_arn: str, queue_arn: str) -> None:
    wanted = {
        "Id": TARGET_ID,
        "Arn": function_arn,
        "RetryPolicy": {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400},
        "DeadLetterConfig": {"Arn": queue_arn},
    }
    if not aws.dry_run and describe_rule(aws, names.trigger_rule) is not None:
        targets = aws.client("events").list_targets_by_rule(Rule=names.trigger_rule)["Targets"]
        if any(subset_equal(wanted, t) for t in targets):
            return
    aws.call("events", "put_targets", Rule=names.trigger_rule, Targets=[wanted])


def deploy_trigger(
    aws: Aws, names: Names, settings: TriggerSettings, state: State, force: bool = False
) -> TriggerResult:
    """Create or update queue, function, invoke config, rule, permission, target; re-runs change nothing."""
    endpoint = describe_endpoint(aws, settings.endpoint_name)
    if endpoint is None:
        message = (
            f"async endpoint {settings.endpoint_name} does not exist: deploy it first with "
            "`ahi-spleen deploy-async` (or pass --endpoint-name)"
        )
        if not aws.dry_run:
            raise AwsCliError(message)
        logger.warning("%s; a real run would stop here", message)
    elif "AsyncInferenceConfig" not in aws.client("sagemaker").describe_endpoint_config(
        EndpointConfigName=endpoint["EndpointConfigName"]
    ):
        raise AwsCliError(
            f"endpoint {settings.endpoint_name} has no AsyncInferenceConfig; "
            "the trigger needs an async endpoint "
            "(`ahi-spleen deploy-async`)"
        )
    url, queue_arn = ensure_queue(aws, names)
    function_arn = ensure_function(aws, names, settings, force)
    ensure_invoke_config(aws, names, queue_arn)
    pattern = event_pattern(settings)
    rule_arn = ensure_rule(aws, names, pattern, force)
    ensure_queue_policy(aws, url, queue_arn, rule_arn)
    ensure_permission(aws, names, rule_arn)
    ensure_target(aws, names, function_arn, queue_arn)
    if not aws.dry_run:
        state.add("s3_prefixes", f"s3://{settings.bucket}/{names.s3_root}")
    return TriggerResult(
        function_arn, rule_arn, url, queue_arn, pattern, f"s3://{settings.bucket}/{names.request_prefix}"
    )
