"""``sagemaker-local serve``: the local SageMaker-runtime gateway (Starlette + uvicorn, 127.0.0.1 default)."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devstack.sagemaker_local.app import GatewayConfig, create_app


def s3_client_factory(endpoint_url: str | None) -> Any:
    def factory() -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"max_attempts": 5, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint_url else {},
        )
        return boto3.client("s3", endpoint_url=endpoint_url, config=config)

    return factory


def serve_command(
    port: int,
    container_url: str,
    model_data_url: str | Path,
    *,
    models_dir: Path | None = None,
    s3_endpoint_url: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv that starts ``sagemaker-local serve`` in a child process with this interpreter."""
    argv = [sys.executable, "-m", "devstack.sagemaker_local.cli", "serve", "--port", str(port)]
    argv += ["--container-url", container_url, "--model-data-url", str(model_data_url)]
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
    s.add_argument("--endpoint-name", help="accept only this EndpointName (default: any)")
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
    s.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s [%(levelname)s] %(name)s - %(message)s")
    import uvicorn

    models_dir = args.models_dir or Path(tempfile.mkdtemp(prefix="sagemaker-local-models-"))
    config = GatewayConfig(
        container_url=args.container_url,
        model_data_url=args.model_data_url,
        models_dir=models_dir,
        async_output=args.async_output,
        async_failure=args.async_failure,
        async_container_url=args.async_container_url,
        async_target_model=args.async_target_model,
        endpoint_name=args.endpoint_name,
        async_queue_dir=args.async_queue_dir,
    )
    app = create_app(config, s3_client_factory(args.s3_endpoint_url))
    logging.getLogger(__name__).info(
        "sagemaker-local on http://%s:%d -> container %s, models from %s",
        args.host,
        args.port,
        args.container_url,
        args.model_data_url,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower(), access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
