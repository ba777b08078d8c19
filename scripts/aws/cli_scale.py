"""Subcommands for inference at scale: ``deploy-trigger``, ``batch`` and ``deploy-components``.

Registered into the ``ahi-spleen`` parser by :func:`register` (the handlers stay thin: parse → plain
function).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scripts.aws import batch, components, iam, model_artifact, trigger
from scripts.aws.names import Names
from scripts.aws.session import Aws
from scripts.aws.state import State
from trigger.events import HANDLED, IMAGE_SET_CREATED

Add = Callable[[str, Callable[..., Any], str], argparse.ArgumentParser]


def cmd_deploy_trigger(args: argparse.Namespace, aws: Aws, names: Names, state: State) -> Any:
    role = iam.ensure_role(aws, names, "lambda", args.bucket, args.role, args.create_roles)
    settings = trigger.TriggerSettings(
        bucket=args.bucket,
        endpoint_name=args.endpoint_name or names.endpoint("async"),
        role_arn=role,
        detail_types=tuple(args.event or [IMAGE_SET_CREATED]),
        datastore_ids=tuple(args.datastore_id or []),
        output_s3_uri=args.output_s3_uri,
        min_slices=args.min_slices,
    )
    return trigger.deploy_trigger(aws, names, settings, state, force=args.force)


def _selection(args: argparse.Namespace) -> batch.Selection:
    ids = batch.read_ids_file(Path(args.ids_file)) if args.ids_file else None
    return batch.Selection(
        datastore_id=args.datastore_id,
        study_date_from=args.study_date_from,
        study_date_to=args.study_date_to,
        updated_since=args.updated_since,
        image_set_ids=ids,
        min_slices=args.min_slices,
    )


def cmd_batch(args: argparse.Namespace, aws: Aws, names: Names, state: State) -> Any:
    selection = _selection(args)
    if args.transform:
        model_artifact.require_model_data(aws, f"s3://{args.bucket}/{names.model_key(args.target_model)}")
        role = iam.ensure_role(
            aws, names, "sagemaker", args.bucket, args.role, args.create_roles, args.allow_write_back
        )
        settings = batch.TransformSettings(
            image=args.image or batch.default_image(aws, names, args.image_tag),
            role_arn=role,
            model_data_url=f"s3://{args.bucket}/{names.model_key(args.target_model)}",
            instance_type=args.instance_type,
            instance_count=args.instance_count,
            max_concurrent=args.max_concurrent,
            output_s3_uri=args.output_s3_uri,
        )
        return _summarised(
            batch.run_transform(
                aws,
                names,
                selection,
                args.bucket,
                settings,
                state,
                wait=not args.no_wait,
                timeout_s=args.timeout,
            )
        )
    journal = Path(args.journal) if args.journal else batch.default_journal(names, aws.region, selection)
    settings_async = batch.AsyncSettings(
        endpoint_name=args.endpoint_name or names.endpoint("async"),
        concurrency=args.concurrency,
        output_s3_uri=args.output_s3_uri,
        wait=not args.no_wait,
        timeout_s=args.timeout,
        poll_interval_s=args.poll_interval,
    )
    return _summarised(batch.run_async(aws, names, selection, args.bucket, settings_async, journal, state))


def _summarised(report: batch.BatchReport) -> batch.BatchReport:
    """The summary table goes to stderr (the JSON report to stdout, like every subcommand's result)."""
    print(report.table(), file=sys.stderr)
    return report


def cmd_deploy_components(args: argparse.Namespace, aws: Aws, names: Names, state: State) -> Any:
    spec = components.ComponentsSpec(  # validated before any AWS call; the role is filled in below
        image=args.image or "",
        role_arn="",
        bucket=args.bucket,
        archives=tuple(args.archive or ["model.tar.gz"]),
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        max_instance_count=args.max_instance_count,
        copies=args.copies,
        max_copies=args.max_copies,
        accelerators=args.accelerators,
        memory_mb=args.memory_mb,
        cpus=args.cpus,
        invocations_per_copy=args.invocations_per_copy,
        inference_ami_version=args.inference_ami_version,
    )
    for archive in spec.archives:
        model_artifact.require_model_data(aws, f"s3://{args.bucket}/{names.model_key(archive)}")
    spec = dataclasses.replace(
        spec,
        image=args.image or batch.default_image(aws, names, args.image_tag),
        role_arn=iam.ensure_role(
            aws, names, "sagemaker", args.bucket, args.role, args.create_roles, args.allow_write_back
        ),
    )
    return components.ensure_components(
        aws, names, spec, wait=not args.no_wait, force=args.force, timeout_s=args.timeout
    )


def _image_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", help="container image URI (default: the pipeline's ECR repository:--image-tag)")
    p.add_argument("--image-tag", default="latest")
    p.add_argument("--role", help="SageMaker execution role name or ARN (default <name>-sagemaker)")
    p.add_argument("--create-roles", action="store_true", help="create the role when it does not exist")
    iam.add_write_back_argument(p)


def register(add: Add) -> None:
    """Add the three subcommands to the ``ahi-spleen`` parser (``add`` is build_parser's helper)."""
    p = add(
        "deploy-trigger",
        cmd_deploy_trigger,
        "EventBridge rule on AHI events -> Lambda (CT filter, once per image set version) -> async endpoint",
    )
    p.add_argument("--bucket", required=True, help="bucket of the async endpoint (request objects go here)")
    p.add_argument("--endpoint-name", help="async endpoint (default <name>-async)")
    p.add_argument(
        "--event",
        action="append",
        choices=HANDLED,
        help=f"AHI detail-type to act on (repeatable; default {IMAGE_SET_CREATED!r})",
    )
    p.add_argument("--datastore-id", action="append", help="only events of this datastore (repeatable)")
    p.add_argument("--output-s3-uri", help="the requests' output.s3Uri (SEG, STL, report)")
    p.add_argument("--min-slices", type=int, help="fewest CT instances worth an inference (default 16)")
    p.add_argument("--role", help="Lambda execution role name or ARN (default <name>-lambda)")
    p.add_argument("--create-roles", action="store_true", help="create the role when it does not exist")
    p.add_argument("--force", action="store_true", help="take over a function/rule without our tag")

    p = add(
        "batch",
        cmd_batch,
        "back-fill a datastore: search, select CT, submit to the async endpoint (or a Batch Transform job)",
    )
    p.add_argument("--datastore-id", required=True)
    p.add_argument("--bucket", required=True, help="bucket for request objects / the transform manifest")
    p.add_argument("--study-date-from", help="DICOM StudyDate YYYYMMDD (inclusive)")
    p.add_argument("--study-date-to", help="DICOM StudyDate YYYYMMDD (inclusive)")
    p.add_argument("--updated-since", help="image sets updated at or after this ISO 8601 time")
    p.add_argument(
        "--ids-file", help="file of image set IDs (one per line, '#' comments) instead of a search"
    )
    p.add_argument("--min-slices", type=int, default=None, help="fewest CT instances worth an inference")
    p.add_argument("--output-s3-uri", help="the requests' output.s3Uri (SEG, STL, report)")
    p.add_argument("--endpoint-name", help="async endpoint (default <name>-async)")
    p.add_argument("--concurrency", type=int, default=8, help="submissions in flight (default %(default)s)")
    p.add_argument(
        "--journal", help="resumable journal (default ~/.ahi-spleen/<name>-<region>-batch-<hash>.jsonl)"
    )
    p.add_argument("--no-wait", action="store_true", help="submit only; do not wait for the results")
    p.add_argument("--timeout", type=float, default=6 * 3600.0, help="seconds to wait for results")
    p.add_argument("--poll-interval", type=float, default=15.0)
    g = p.add_argument_group("Batch Transform (--transform)")
    g.add_argument("--transform", action="store_true", help="run a SageMaker Batch Transform job instead")
    _image_args(g)  # type: ignore[arg-type]
    g.add_argument("--target-model", default="model.tar.gz", help="archive under the model prefix")
    g.add_argument("--instance-type", default="ml.g4dn.xlarge")
    g.add_argument("--instance-count", type=int, default=1)
    g.add_argument("--max-concurrent", type=int, default=1, help="MaxConcurrentTransforms per instance")

    p = add(
        "deploy-components",
        cmd_deploy_components,
        "GPU multi-model route: one endpoint, one inference component per model archive (copies, scaling)",
    )
    p.add_argument("--bucket", required=True)
    _image_args(p)
    p.add_argument(
        "--archive", action="append", help="archive under the model prefix (repeatable; default model.tar.gz)"
    )
    p.add_argument("--instance-type", default="ml.g5.xlarge")
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--max-instance-count", type=int, default=2, help="managed instance scaling maximum")
    p.add_argument("--copies", type=int, default=1, help="initial copies per component")
    p.add_argument("--max-copies", type=int, default=2, help="autoscaling maximum copies per component")
    p.add_argument("--accelerators", type=int, default=1, help="GPUs per copy (0 on CPU instance types)")
    p.add_argument("--memory-mb", type=int, default=8192, help="memory per copy")
    p.add_argument("--cpus", type=float, default=2.0, help="CPU cores per copy")
    p.add_argument(
        "--invocations-per-copy", type=float, default=2.0, help="target InvocationsPerCopy for autoscaling"
    )
    p.add_argument("--inference-ami-version", default="auto", help="as for deploy-realtime (default auto)")
    p.add_argument("--no-wait", action="store_true")
    p.add_argument("--force", action="store_true", help="take over an endpoint without our tag")
    p.add_argument("--timeout", type=float, default=3600.0)
