"""``sagemaker-local serve``: the local SageMaker-runtime gateway (Starlette + uvicorn, 127.0.0.1 default);
``sagemaker-local transform``: run one Batch Transform job against a local container (see
``transform.py``)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from devstack.sagemaker_local.app import DEFAULT_ACCOUNT_ID, GatewayConfig, create_app
from devstack.sagemaker_local.models import FAILED_LOAD_CLEANUP_S


def s3_client_factory(endpoint_url: str | None) -> Any:
    def factory() -> Any:
        from ahi_connector.client import make_client

        return make_client("s3", endpoint_url=endpoint_url, max_attempts=5)

    return factory


def serve_command(
    port: int,
    container_url: str,
    model_data_url: str | Path,
    *,
    endpoint_names: Sequence[str],
    models_dir: Path | None = None,
    s3_endpoint_url: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv that starts ``sagemaker-local serve`` in a child process with this interpreter."""
    argv = [sys.executable, "-m", "devstack.sagemaker_local.cli", "serve", "--port", str(port)]
    argv += ["--container-url", container_url, "--model-data-url", str(model_data_url)]
    for name in endpoint_names:
        argv += ["--endpoint-name", name]
    if models_dir is not None:
        argv += ["--models-dir", str(models_dir)]
    if s3_endpoint_url:
        argv += ["--s3-endpoint-url", s3_endpoint_url]
    return argv + list(extra)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sagemaker-local", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the sagemaker-runtime API")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8090)
    s.add_argument(
        "--container-url", default="http://127.0.0.1:8080", help="multi-model container (container/serve)"
    )
    s.add_argument(
        "--model-data-url",
        required=True,
        help="folder or s3://bucket/prefix holding the model archives (the endpoint's ModelDataUrl)",
    )
    s.add_argument(
        "--models-dir", type=Path, help="where archives are extracted (default: a temporary folder)"
    )
    s.add_argument(
        "--endpoint-name",
        action="append",
        dest="endpoint_names",
        required=True,
        metavar="NAME",
        help="an EndpointName this gateway serves (repeatable); any other name answers ValidationError "
        "'Endpoint NAME of account ACCOUNT not found.' as SageMaker does",
    )
    s.add_argument("--account-id", default=DEFAULT_ACCOUNT_ID, help="account named in errors and ARNs")
    s.add_argument("--region", default=None, help="region in ARNs (default AWS_REGION / us-east-1)")
    s.add_argument("--async-output", help="S3OutputPath for InvokeEndpointAsync, s3://bucket/prefix")
    s.add_argument("--async-failure", help="S3FailurePath (default: --async-output)")
    s.add_argument(
        "--async-container-url", help="single-model container for async (default: the MME container)"
    )
    s.add_argument(
        "--async-target-model", default="model.tar.gz", help="target model when async uses the MME"
    )
    s.add_argument(
        "--async-queue-dir",
        type=Path,
        help="journal of accepted async requests, resumed on restart (default: <models-dir>/.async-jobs)",
    )
    s.add_argument(
        "--s3-endpoint-url", help="S3 endpoint (default: the standard chain, e.g. AWS_ENDPOINT_URL_S3)"
    )
    s.add_argument(
        "--max-model-size-mb",
        type=int,
        help="refuse archives that unpack to more (default: free disk under --models-dir and free memory)",
    )
    s.add_argument(
        "--failed-load-cleanup-s",
        type=float,
        default=FAILED_LOAD_CLEANUP_S,
        help="remove the folder of a load the container refused this many seconds later",
    )
    s.add_argument("--log-level", default="INFO")

    t = sub.add_parser(
        "transform", help="run a Batch Transform job's records through a container's /invocations"
    )
    job = t.add_mutually_exclusive_group(required=True)
    job.add_argument(
        "--job-json", type=Path, help="CreateTransformJob parameters / DescribeTransformJob answer"
    )
    job.add_argument(
        "--job-name", help="read the job with DescribeTransformJob (see --sagemaker-endpoint-url)"
    )
    t.add_argument("--sagemaker-endpoint-url", help="SageMaker API endpoint holding the job (e.g. moto)")
    t.add_argument(
        "--container-url", required=True, help="single-model container (GET /ping, POST /invocations)"
    )
    t.add_argument("--s3-endpoint-url", help="S3 endpoint (default: the standard chain)")
    t.add_argument("--log-level", default="INFO")
    return p


def transform_main(args: argparse.Namespace) -> int:
    """Run the job; print its outcome as JSON; exit 1 when it failed."""
    import json

    from ahi_connector.client import make_client
    from devstack.sagemaker_local.transform import TransformRunner

    if args.job_json:
        job = json.loads(args.job_json.read_text())
    else:
        sm = make_client("sagemaker", endpoint_url=args.sagemaker_endpoint_url)
        job = sm.describe_transform_job(TransformJobName=args.job_name)
    result = TransformRunner(job, args.container_url, s3_client_factory(args.s3_endpoint_url)()).run()
    print(json.dumps(dataclasses.asdict(result), indent=2))
    return 0 if result.status == "Completed" else 1


#: Prefix of the default models folder; it carries the gateway's PID so a later start can remove the folder
#: of a gateway that was killed (SIGKILL leaves no chance to clean up).
TEMP_MODELS_PREFIX = "sagemaker-local-models-p"


def remove_stale_model_dirs(parent: Path) -> None:
    """Remove default models folders of gateways that are no longer running."""
    for entry in parent.glob(f"{TEMP_MODELS_PREFIX}*-*"):
        pid = entry.name[len(TEMP_MODELS_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)) and entry.is_dir():
            logging.getLogger(__name__).info("removing %s left by a gateway that is gone", entry)
            shutil.rmtree(entry, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s [%(levelname)s] %(name)s - %(message)s")
    if args.command == "transform":
        return transform_main(args)
    import uvicorn

    temporary = args.models_dir is None
    if temporary:
        remove_stale_model_dirs(Path(tempfile.gettempdir()))
        models_dir = Path(tempfile.mkdtemp(prefix=f"{TEMP_MODELS_PREFIX}{os.getpid()}-"))
    else:
        models_dir = args.models_dir
    config = GatewayConfig(
        container_url=args.container_url,
        model_data_url=args.model_data_url,
        models_dir=models_dir,
        async_output=args.async_output,
        async_failure=args.async_failure,
        async_container_url=args.async_container_url,
        async_target_model=args.async_target_model,
        endpoint_names=tuple(args.endpoint_names),
        account_id=args.account_id,
        region=args.region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1",
        async_queue_dir=args.async_queue_dir,
        max_model_bytes=args.max_model_size_mb * 1024 * 1024 if args.max_model_size_mb else None,
        remove_models_dir=temporary,
        failed_load_cleanup_s=args.failed_load_cleanup_s,
    )
    app = create_app(config, s3_client_factory(args.s3_endpoint_url))
    logging.getLogger(__name__).info(
        "sagemaker-local on http://%s:%d (endpoints %s) -> container %s, models from %s",
        args.host,
        args.port,
        ", ".join(config.endpoint_names),
        args.container_url,
        args.model_data_url,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower(), access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
