"""``ahi-spleen``: deploy, import, invoke and clean up the spleen segmentation service on AWS.

Every subcommand is idempotent (a re-run finds what exists and changes nothing) and accepts ``--region``,
``--profile``, ``--endpoint-url`` (all services), ``--<service>-endpoint-url`` (one service; standard
``AWS_ENDPOINT_URL_<SERVICE>`` variables work too) and ``--dry-run`` (print the calls that would change
something). Results are printed as JSON on stdout; progress and logs go to stderr. A command that waits
(build, import, deploy, async invoke, cleanup) shows the elapsed time and the current AWS state while it waits
(a status bar on a terminal, one line per state change otherwise) and every command ends with one summary line
on stderr. ``--quiet``: no progress, no summary, only warnings and errors; ``--json``: progress and summary as
JSON lines on stderr (``{"event": "progress" | "summary", ...}``), for scripts; stdout is the same JSON either
way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from scripts.aws import (
    ahi_import,
    cleanup,
    cli_scale,
    deploy,
    iam,
    invoke,
    model_artifact,
    monitoring,
    pipeline,
    scaling,
)
from scripts.aws.names import Names
from scripts.aws.session import SERVICES, Aws, AwsCliError, AwsSettings
from scripts.aws.state import State, default_state_path
from scripts.aws.storage import ensure_bucket

logger = logging.getLogger(__name__)

DEFAULT_NAME = "ahi-spleen"
Handler = Callable[[argparse.Namespace, Aws, Names, State], Any]


def _key_values(pairs: Sequence[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AwsCliError(f"{flag} expects KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


# ---- subcommand handlers (thin: parse → call a plain function → return a result) ----
def cmd_pipeline(args: argparse.Namespace, aws: Aws, names: Names, state: State) -> Any:
    ensure_bucket(aws, args.bucket, names.name, state, versioned=True)
    settings = pipeline.PipelineSettings(
        bucket=args.bucket,
        codebuild_role_arn=iam.ensure_role(
            aws, names, "codebuild", args.bucket, args.codebuild_role, args.create_roles
        ),
        pipeline_role_arn=iam.ensure_role(
            aws, names, "codepipeline", args.bucket, args.pipeline_role, args.create_roles
        ),
        buildspec=args.buildspec,
        image_tag=args.image_tag,
        build_image=args.build_image,
        compute_type=args.compute_type,
        env=_key_values(args.build_env, "--build-env"),
    )
    return pipeline.ensure_pipeline(aws, names, settings, state)


def cmd_build(args: argparse.Namespace, aws: Aws, names: Names, state: State) -> Any:
    if args.source_dir:
        pipeline.upload_source(aws, names, args.bucket, Path(args.source_dir), state, args.buildspec)
    else:
        pipeline.require_source(aws, names, args.bucket)
    outcome = pipeline.start_build(aws, names, args.bucket, direct=args.direct, timeout_s=args.timeout)
    return outcome


def cmd_upload_model(args: argparse.Namespace, aws: Aws, names: Names, state: State) -> Any:
    return model_artifact.upload_model(
        aws, names, args.bucket, state, Path(args.archive), build=args.build, target_model=args.target_model
    )


def _image(args: argparse.Namespace, aws: Aws, names: Names) -> str:
    if args.image:
        return str(args.image)
    try:
        return f"{pipeline.repository_uri(aws, names)}:{args.image_tag}"
    except AwsCliError:
        if not aws.dry_run:
            raise
        logger.warning(
            "ECR repository %s does not exist yet; a real run would stop here", names.ecr_repository
        )
        return f"<ECR repository {names.ecr_repository}>:{args.image_tag}"


def _endpoint_spec(
    args: argparse.Namespace, aws: Aws, names: Names, kind: str, async_config: dict[str, Any] | None = None
) -> deploy.EndpointSpec:
    if kind == "mme":
        deploy.refuse_gpu_for_mme(args.instance_type)  # before any AWS call
        data_url = f"s3://{args.bucket}/{names.model_prefix}"
    else:
        data_url = f"s3://{args.bucket}/{names.model_key(args.target_model)}"
    model_artifact.require_model_data(aws, data_url)
    role = iam.ensure_role(
        aws, names, "sagemaker", args.bucket, args.role, args.create_roles, args.allow_write_back
    )
    return deploy.EndpointSpec(
        kind=kind,
        image=_image(args, aws, names),
        role_arn=role,
        model_data_url=data_url,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        env={monitoring.SERVICE_ENV: names.endpoint(kind), **_key_values(args.env, "--env")},
        async_config=async_config,
        inference_ami_version=getattr(args, "inference_ami_version", "auto"),
    )


def _deploy(
    args: argparse.Namespace, aws: Aws, names: Names, spec: deploy.EndpointSpec
) -> deploy.EndpointResult:
    result = deploy.ensure_endpoint(
        aws, names, spec, wait=not args.no_wait, force=args.force, timeout_s=args.timeout
    )
    if args.no_monitoring:
        return result
    return dataclasses.replace(result, monitoring=monitoring.ensure_monitoring(aws, names, spec.kind))


def cmd_deploy_mme(args: argparse.Namespace, aws: Aws, names: Names, state: State) -> Any:
    return _deploy(args, aws, names, _endpoint_spec(args, aws, names, "mme"))


def cmd_deploy_realtime(args: argparse.Namespace, aws: Aws, names: Names, state: State) -> Any:
    return _deploy(args, aws, names, _endpoint_spec(args, aws, names, "rt"))


def cmd_deploy_async(args: argparse.Namespace, aws: Aws, names: Names, state: State) -> Any:
    settings = scaling.ScalingSettings(
        min_capacity=args.min_capacity, max_capacity=args.max_capacity, backlog_target=args.backlog_target
    )
    # fail before creating topics when the archive is missing
    model_artifact.require_model_data(aws, f"s3://{args.bucket}/{names.model_key(args.target_model)}")
    success, error = args.success_topic_arn, args.error_topic_arn
    if args.sns:
        success = success or scaling.ensure_topic(aws, names, "success")
        error = error or scaling.ensure_topic(aws, names, "error")
    config = deploy.async_inference_config(names, args.bucket, success, error, args.max_concurrent)
    result = _deploy(args, aws, names, _endpoint_spec(args, aws, names, "async", config))
    scaled = scaling.ensure_async_scaling(aws, names, result.endpoint_name, settings)
    return {"endpoint": result, "scaling": scaled, "success_topic": success, "error_topic": error}


def cmd_import(args: argparse.Namespace, aws: Aws, names: Names, state: State) -> Any:
    if args.datastore_id:
        datastore_id = args.datastore_id
    elif args.create_datastore:
        datastore_id = ahi_import.ensure_datastore(aws, names, state)
    else:
        raise AwsCliError(
            f"pass --datastore-id ID, or --create-datastore to create/reuse the {names.datastore!r} datastore"
        )
    role = iam.ensure_role(aws, names, "ahi-import", args.bucket, args.role, args.create_roles)
    return ahi_import.import_folder(
        aws, names, Path(args.folder), args.bucket, datastore_id, role, state, timeout_s=args.timeout
    )


def cmd_invoke(args: argparse.Namespace, aws: Aws, names: Names, state: State) -> Any:
    body_text = Path(args.body_file).read_text() if args.body_file else args.body
    body = invoke.request_body(body_text, args.datastore_id, args.image_set_id)
    if args.use_async:
        endpoint = args.endpoint_name or names.endpoint("async")
        if not args.bucket:
            raise AwsCliError(
                "--async needs --bucket (the request is uploaded to S3 for InvokeEndpointAsync)"
            )
        return invoke.invoke_async(
            aws,
            names,
            endpoint,
            body,
            args.bucket,
            state,
            timeout_s=args.timeout,
            interval_s=args.poll_interval,
        )
    endpoint = args.endpoint_name or names.endpoint(args.kind)
    target = args.target_model if (args.kind == "mme" or args.endpoint_name) else None
    return invoke.invoke_realtime(aws, endpoint, body, target)


def cmd_cleanup(args: argparse.Namespace, aws: Aws, names: Names, state: State) -> Any:
    options = cleanup.CleanupOptions(
        pipeline=args.pipeline or args.all,
        roles=args.roles or args.all,
        data=args.data or args.all,
        force=args.force,
        bucket=args.bucket,
        wait=not args.no_wait,
    )
    return cleanup.cleanup(aws, names, state, options)


# ---- argument parsing ----
def _common(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("AWS connection")
    g.add_argument(
        "--name", default=DEFAULT_NAME, help="deployment name; prefixes every resource (default %(default)s)"
    )
    g.add_argument("--region", help="AWS region (default: profile / AWS_DEFAULT_REGION)")
    g.add_argument("--profile", help="AWS named profile")
    g.add_argument("--endpoint-url", help="endpoint for every service (e.g. a moto server)")
    for service in SERVICES:
        flags = [f"--{service}-endpoint-url"] + (
            ["--ahi-endpoint-url"] if service == "medical-imaging" else []
        )
        g.add_argument(
            *flags,
            dest=f"ep_{service}",
            metavar="URL",
            help=f"endpoint for {service} only (or AWS_ENDPOINT_URL_{service.upper().replace('-', '_')})",
        )
    g.add_argument(
        "--dry-run", action="store_true", help="print the calls that would change something; send none"
    )
    g.add_argument(
        "--state-file", help="local record of created data (default ~/.ahi-spleen/<name>-<region>.json)"
    )
    g.add_argument("--no-progress", action="store_true", help="no progress while waiting (still a summary)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary; warnings/errors only")
    g.add_argument(
        "--json", action="store_true", help="progress and summary as JSON lines on stderr (stdout: result)"
    )
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _deploy_args(p: argparse.ArgumentParser, default_instance: str, single_model: bool) -> None:
    p.add_argument("--bucket", required=True, help="bucket holding the model archive (see upload-model)")
    p.add_argument("--image", help="container image URI (default: the pipeline's ECR repository:--image-tag)")
    p.add_argument("--image-tag", default="latest")
    p.add_argument("--role", help="SageMaker execution role name or ARN (default <name>-sagemaker)")
    p.add_argument("--create-roles", action="store_true", help="create the role when it does not exist")
    iam.add_write_back_argument(p)
    p.add_argument("--instance-type", default=default_instance, help="default %(default)s")
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument(
        "--env",
        action="append",
        metavar="KEY=VALUE",
        help="container environment (repeatable), e.g. SAGEMAKER_MODEL_SERVER_WORKERS=2",
    )
    if single_model:
        p.add_argument("--target-model", default="model.tar.gz", help="archive under the model prefix")
        p.add_argument(
            "--inference-ami-version",
            default="auto",
            help="production variant InferenceAmiVersion: auto (GPU types: "
            f"{deploy.GPU_INFERENCE_AMI}, driver 580 / CUDA 13), none (SageMaker's default host; the image's "
            "CUDA forward-compatibility path), or a value of botocore's enum",
        )
    p.add_argument("--no-wait", action="store_true", help="do not wait for InService")
    p.add_argument(
        "--no-monitoring", action="store_true", help="no CloudWatch dashboard and alarms for the endpoint"
    )
    p.add_argument("--force", action="store_true", help="take over an existing endpoint without our tag")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ahi-spleen", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p)
        p.set_defaults(handler=handler)
        return p

    p = add("pipeline", cmd_pipeline, "create/update the ECR repository, CodeBuild project and CodePipeline")
    p.add_argument(
        "--bucket", required=True, help="versioned bucket for the source archive and pipeline artefacts"
    )
    p.add_argument("--codebuild-role", help="CodeBuild service role name or ARN (default <name>-codebuild)")
    p.add_argument(
        "--pipeline-role", help="CodePipeline service role name or ARN (default <name>-codepipeline)"
    )
    p.add_argument(
        "--create-roles", action="store_true", help="create missing roles with least-privilege policies"
    )
    p.add_argument("--buildspec", default=pipeline.DEFAULT_BUILDSPEC, help="buildspec path inside the source")
    p.add_argument("--image-tag", default="latest")
    p.add_argument("--build-image", default=pipeline.DEFAULT_BUILD_IMAGE)
    p.add_argument("--compute-type", default=pipeline.DEFAULT_COMPUTE_TYPE)
    p.add_argument(
        "--build-env", action="append", metavar="KEY=VALUE", help="extra CodeBuild environment variable"
    )

    p = add("build", cmd_build, "upload the source (optional), run the pipeline (or CodeBuild) and wait")
    p.add_argument("--bucket", required=True)
    p.add_argument("--source-dir", help="zip this directory and upload it as the pipeline source first")
    p.add_argument("--buildspec", default=pipeline.DEFAULT_BUILDSPEC)
    p.add_argument(
        "--direct", action="store_true", help="start the CodeBuild project directly, not the pipeline"
    )
    p.add_argument("--timeout", type=float, default=3600.0)

    p = add("upload-model", cmd_upload_model, "package model.tar.gz and upload it under the MME model prefix")
    p.add_argument("--bucket", required=True)
    p.add_argument("--archive", default=str(model_artifact.DEFAULT_ARCHIVE), help="default %(default)s")
    p.add_argument("--build", action="store_true", help="(re)build the archive with model.package first")
    p.add_argument("--target-model", help="object name under the prefix (default: the archive's file name)")

    p = add(
        "deploy-mme", cmd_deploy_mme, "multi-model endpoint on a CPU instance type (GPU types are refused)"
    )
    _deploy_args(p, deploy.DEFAULT_MME_INSTANCE, single_model=False)
    p = add("deploy-realtime", cmd_deploy_realtime, "single-model real-time endpoint (GPU allowed)")
    _deploy_args(p, deploy.DEFAULT_GPU_INSTANCE, single_model=True)
    p = add(
        "deploy-async", cmd_deploy_async, "async endpoint with S3 output, SNS and scale-to-zero autoscaling"
    )
    _deploy_args(p, deploy.DEFAULT_GPU_INSTANCE, single_model=True)
    p.add_argument("--sns", action="store_true", help="create/reuse <name>-async-success/-error SNS topics")
    p.add_argument("--success-topic-arn")
    p.add_argument("--error-topic-arn")
    p.add_argument("--min-capacity", type=int, default=0)
    p.add_argument("--max-capacity", type=int, default=2)
    p.add_argument(
        "--backlog-target", type=float, default=5.0, help="ApproximateBacklogSizePerInstance target"
    )
    p.add_argument("--max-concurrent", type=int, default=1, help="MaxConcurrentInvocationsPerInstance")

    p = add("import", cmd_import, "upload a DICOM folder and import it into HealthImaging")
    p.add_argument("folder", help="local folder of DICOM P10 files")
    p.add_argument("--bucket", required=True)
    p.add_argument("--datastore-id")
    p.add_argument(
        "--create-datastore", action="store_true", help="create/reuse the <name>-datastore datastore"
    )
    p.add_argument("--role", help="import data-access role name or ARN (default <name>-ahi-import)")
    p.add_argument("--create-roles", action="store_true")
    p.add_argument("--timeout", type=float, default=3600.0)

    p = add(
        "invoke", cmd_invoke, "invoke an endpoint (real-time, or --async through S3) and print the result"
    )
    p.add_argument(
        "--kind", choices=("mme", "rt"), default="mme", help="which real-time endpoint (default mme)"
    )
    p.add_argument("--endpoint-name", help="explicit endpoint name (default <name>-<kind>)")
    p.add_argument("--target-model", default="model.tar.gz", help="MME TargetModel (default %(default)s)")
    p.add_argument("--async", dest="use_async", action="store_true", help="use the async endpoint")
    p.add_argument("--bucket", help="bucket for the async request object")
    body = p.add_mutually_exclusive_group()
    body.add_argument("--body", help="request JSON")
    body.add_argument("--body-file", help="file holding the request JSON")
    p.add_argument("--datastore-id")
    p.add_argument("--image-set-id")
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--poll-interval", type=float, default=5.0)

    p = add(
        "cleanup",
        cmd_cleanup,
        "delete endpoints, configs, models, scaling, alarms, topics (and more if asked)",
    )
    p.add_argument(
        "--pipeline", action="store_true", help="also the pipeline, CodeBuild project and ECR repository"
    )
    p.add_argument("--roles", action="store_true", help="also the IAM roles created with --create-roles")
    p.add_argument(
        "--data", action="store_true", help="also image sets, datastores and S3 data from the state file"
    )
    p.add_argument("--all", action="store_true", help="--pipeline --roles --data")
    p.add_argument(
        "--force", action="store_true", help="delete name-derived resources even without our tag/state"
    )
    p.add_argument("--bucket", help="with --force --data: also delete s3://BUCKET/<name>/")
    p.add_argument("--no-wait", action="store_true", help="do not wait for endpoints/image sets to be gone")

    cli_scale.register(add)  # deploy-trigger, batch, deploy-components
    return parser


def settings_from_args(args: argparse.Namespace) -> AwsSettings:
    overrides = {s: getattr(args, f"ep_{s}") for s in SERVICES if getattr(args, f"ep_{s}")}
    return AwsSettings(
        region=args.region,
        profile=args.profile,
        endpoint_url=args.endpoint_url,
        service_endpoints=overrides,
        dry_run=args.dry_run,
        progress=not (args.no_progress or args.quiet),
        progress_style="json" if args.json else "auto",
    )


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_json") and callable(value.to_json):
        return _jsonable(value.to_json())
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, Path):
        return str(value)
    return value


def render(command: str, result: Any, aws: Aws) -> str:
    if command == "invoke" and isinstance(result, invoke.InvokeResult):
        return result.text()
    out = _jsonable(result)
    payload = {
        "result": out,
        "dry_run": aws.dry_run,
        "would_call" if aws.dry_run else "changes": [c.render() for c in aws.calls],
    }
    return json.dumps(payload, indent=2, default=str)


def _summary_parts(out: Any) -> list[str]:
    """Short phrases for the summary line from a command's JSON-able result."""
    if not isinstance(out, dict):
        return []
    parts: list[str] = []
    nested = out.get("endpoint")
    endpoint: dict[str, Any] = nested if isinstance(nested, dict) else out
    if "endpoint_name" in endpoint and "status" in endpoint:
        parts.append(f"endpoint {endpoint['endpoint_name']} {endpoint['status']}")
    watched = endpoint.get("monitoring")
    if isinstance(watched, dict):
        parts.append(f"dashboard {watched['dashboard']} + {len(watched['alarms'])} alarms")
    if "job_id" in out and "image_set_ids" in out:
        parts.append(f"import job {out['job_id']} {out['status']}: {len(out['image_set_ids'])} image set(s)")
    if "phases" in out and "kind" in out:
        parts.append(f"{out['kind']} {out['id']} {out['status']}")
    if "deleted" in out and "kept" in out:
        parts.append(f"deleted {len(out['deleted'])}, kept {len(out['kept'])} not ours")
    if "s3_uri" in out and "uploaded" in out:
        parts.append(f"model {out['s3_uri']} {'uploaded' if out['uploaded'] else 'unchanged'}")
    if "pipeline_name" in out:
        parts.append(f"pipeline {out['pipeline_name']}, repository {out.get('repository_uri')}")
    return parts


def summary_line(command: str, result: Any, aws: Aws, code: int, elapsed_s: float) -> str:
    """The one line every command ends with (stderr), e.g. ``ahi-spleen deploy-mme: endpoint x InService;
    4 change(s); 412 s``."""
    if isinstance(result, invoke.InvokeResult):
        parts = [f"endpoint {result.endpoint_name} {'failed' if result.failed else 'answered'}"]
        if result.output_location:
            parts.append(f"output {result.output_location}")
    else:
        parts = _summary_parts(_jsonable(result))
    changes = f"{len(aws.calls)} change(s){' planned (dry run)' if aws.dry_run else ''}"
    status = "" if code == 0 else f"; exit code {code}"
    return f"ahi-spleen {command}: {', '.join(parts) or 'done'}; {changes}; {elapsed_s:.0f} s{status}"


def run(argv: Sequence[str] | None = None) -> tuple[int, str]:
    """Parse, run one subcommand; return (exit code, text for stdout); the summary line goes to stderr."""
    started = time.monotonic()
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)  # also when logging was configured before (in-process callers)
    if not args.verbose:
        for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    aws = Aws(settings_from_args(args))
    names = Names(args.name)
    state_path = Path(args.state_file) if args.state_file else default_state_path(names.name, aws.region)
    state = State(state_path, persist=not args.dry_run)
    result = args.handler(args, aws, names, state)
    code = 0
    if isinstance(result, ahi_import.ImportOutcome) and result.status == "FAILED":
        code = 1
    if isinstance(result, invoke.InvokeResult) and result.failed:
        code = 1
    code = max(code, int(getattr(result, "exit_code", 0)))  # batch: 1 when any image set failed
    if not args.quiet:
        line = summary_line(args.command, result, aws, code, time.monotonic() - started)
        if args.json:
            line = json.dumps(
                {
                    "event": "summary",
                    "command": args.command,
                    "summary": line,
                    "changes": len(aws.calls),
                    "exitCode": code,
                    "elapsedSeconds": round(time.monotonic() - started, 1),
                }
            )
        print(line, file=sys.stderr, flush=True)
    return code, render(args.command, result, aws)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code, text = run(argv)
    except (AwsCliError, ValueError) as exc:
        logger.debug("failed", exc_info=True)
        print(f"ahi-spleen: error: {exc}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as exc:
        logger.debug("AWS call failed", exc_info=True)
        print(
            f"ahi-spleen: AWS error: {exc}\n(re-run with -v for the trace; the command is safe to re-run)",
            file=sys.stderr,
        )
        return 1
    print(text)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
