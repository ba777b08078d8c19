"""``ahi-local`` command line.

``ahi-local serve --data-dir DIR [--port N] [--s3-endpoint-url URL] [faults]`` runs the service;
``ahi-local import FOLDER --endpoint-url URL --s3-endpoint-url URL [--datastore-id ID]`` uploads a folder to
S3, imports it and prints the job summary as JSON.

Fault flags (each also settable by environment variable, see :mod:`devstack.ahi_local.settings`; flags win):
``--throttle-rate R`` (AHI_LOCAL_THROTTLE_RATE), ``--error-rate R`` (AHI_LOCAL_ERROR_RATE),
``--latency-ms MS`` (AHI_LOCAL_LATENCY_MS), ``--corrupt-rate R`` (AHI_LOCAL_CORRUPT_RATE),
``--fail-frame ID`` / ``--hang-frame ID`` / ``--corrupt-frame ID`` (repeatable; AHI_LOCAL_FAIL_FRAMES,
AHI_LOCAL_HANG_FRAMES, AHI_LOCAL_CORRUPT_FRAMES as comma lists), ``--fault-operation NAME`` (limit rate faults
to operations; AHI_LOCAL_FAULT_OPERATIONS), ``--hang-seconds S`` (AHI_LOCAL_HANG_SECONDS), ``--fault-seed N``
(AHI_LOCAL_FAULT_SEED).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .faults import FaultSettings
from .guard import is_loopback
from .settings import (
    DEFAULT_ACCOUNT_ID,
    DEFAULT_REGION,
    DEFAULT_TRANSITION_S,
    ENV_ACCESS_KEY_ID,
    ENV_ACCOUNT_ID,
    ENV_BODY_TIMEOUT_S,
    ENV_CREATE_S,
    ENV_ENABLE_FAULTS,
    ENV_IMPORT_WORKERS,
    ENV_LOCK_WAIT_S,
    ENV_REGION,
    ENV_S3_ENDPOINT_URL,
    ENV_SECRET_ACCESS_KEY,
    ENV_TRANSITION_S,
    ServeSettings,
    configured_credentials,
    default_environ,
    faults_from_env,
)

logger = logging.getLogger(__name__)


def serve_command(
    port: int,
    data_dir: str | Path,
    *,
    s3_endpoint_url: str | None = None,
    host: str = "127.0.0.1",
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv that starts ``ahi-local serve`` in a child process with this interpreter (demo, tests)."""
    argv = [sys.executable, "-m", "devstack.ahi_local.cli", "serve", "--host", host, "--port", str(port)]
    argv += ["--data-dir", str(data_dir)]
    if s3_endpoint_url:
        argv += ["--s3-endpoint-url", s3_endpoint_url]
    return argv + list(extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ahi-local", description="Local AWS HealthImaging-compatible service"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8089)
    serve.add_argument("--data-dir", type=Path, required=True, help="durable store (created if missing)")
    serve.add_argument("--s3-endpoint-url", help=f"S3 endpoint for import jobs (env {ENV_S3_ENDPOINT_URL})")
    serve.add_argument(
        "--import-workers", type=int, help=f"threads per import job (env {ENV_IMPORT_WORKERS})"
    )
    serve.add_argument(
        "--transition-seconds",
        type=float,
        help="how long update/copy/delete keep an image set LOCKED before it is ACTIVE again "
        f"(env {ENV_TRANSITION_S}; default {DEFAULT_TRANSITION_S})",
    )
    serve.add_argument(
        "--datastore-creation-seconds",
        type=float,
        help="how long CreateDatastore stays CREATING before ACTIVE "
        f"(env {ENV_CREATE_S}; default {DEFAULT_TRANSITION_S})",
    )
    serve.add_argument(
        "--region", help=f"region in ARNs (env {ENV_REGION}, AWS_REGION; default {DEFAULT_REGION})"
    )
    serve.add_argument(
        "--account-id", help=f"account in ARNs (env {ENV_ACCOUNT_ID}; default {DEFAULT_ACCOUNT_ID})"
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--auth",
        choices=["auto", "sigv4", "none"],
        default="auto",
        help="verify AWS SigV4 signatures against the configured credentials (AHI_LOCAL_ACCESS_KEY_ID / "
        "AHI_LOCAL_SECRET_ACCESS_KEY, else AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); auto: on whenever "
        "--host is not a loopback address (none is refused there)",
    )
    imp = sub.add_parser("import", help="upload a DICOM folder to S3 and import it (prints a JSON summary)")
    imp.add_argument("folder", type=Path)
    imp.add_argument("--endpoint-url", required=True, help="the ahi-local (or AHI) endpoint")
    imp.add_argument("--s3-endpoint-url", help="S3 endpoint (moto server); omit for AWS S3")
    imp.add_argument("--datastore-id", help="import into this datastore (default: create one)")
    imp.add_argument("--datastore-name", default="ahi-local", help="name of the datastore to create")
    imp.add_argument("--bucket", default="ahi-local-import", help="S3 bucket for input and output (created)")
    imp.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the job")
    imp.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    faults = serve.add_argument_group("fault injection (tests only; off unless enabled)")
    faults.add_argument(
        "--enable-faults",
        action="store_true",
        help=f"allow runtime fault settings (PUT /_local/faults; env {ENV_ENABLE_FAULTS}=true); any fault "
        "flag below enables it too",
    )
    faults.add_argument(
        "--throttle-rate", type=float, help="fraction of requests answered ThrottlingException"
    )
    faults.add_argument(
        "--error-rate", type=float, help="fraction of requests answered InternalServerException"
    )
    faults.add_argument("--latency-ms", type=float, help="added latency per AWS API request")
    faults.add_argument(
        "--corrupt-rate", type=float, help="fraction of GetImageFrame answers with garbled bytes"
    )
    faults.add_argument(
        "--fail-frame", action="append", dest="fail_frames", metavar="ID", help="500 for frame"
    )
    faults.add_argument("--hang-frame", action="append", dest="hang_frames", metavar="ID", help="hang frame")
    faults.add_argument(
        "--corrupt-frame", action="append", dest="corrupt_frames", metavar="ID", help="garble frame"
    )
    faults.add_argument(
        "--fault-operation",
        action="append",
        dest="operations",
        metavar="NAME",
        help="limit throttle/error rates to these operations",
    )
    faults.add_argument("--hang-seconds", type=float, help="how long a hung frame waits (default 300)")
    faults.add_argument("--fault-seed", type=int, dest="seed", help="seed for the random faults")
    return parser


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> ServeSettings:
    values = faults_from_env(environ)
    for field in (
        "throttle_rate",
        "error_rate",
        "latency_ms",
        "corrupt_rate",
        "fail_frames",
        "hang_frames",
        "corrupt_frames",
        "operations",
        "hang_seconds",
        "seed",
    ):
        value = getattr(args, field)
        if value is not None:
            values[field] = value
    workers = args.import_workers or int(environ.get(ENV_IMPORT_WORKERS) or 2)
    enable_faults = (
        args.enable_faults
        or environ.get(ENV_ENABLE_FAULTS, "").strip().lower() in ("1", "true", "yes")
        or bool(values)
    )
    auth = args.auth
    if auth == "auto":
        auth = "none" if is_loopback(args.host) else "sigv4"
    if auth == "none" and not is_loopback(args.host):
        raise ValueError(
            f"--host {args.host} exposes the store (patient data) to the network: it needs --auth sigv4 "
            "(the default there), not --auth none"
        )
    credentials = configured_credentials(environ) if auth == "sigv4" else None
    if auth == "sigv4" and credentials is None:
        raise ValueError(
            f"SigV4 verification needs credentials: set {ENV_ACCESS_KEY_ID} and {ENV_SECRET_ACCESS_KEY} (or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) in the server's environment"
        )
    return ServeSettings(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        s3_endpoint_url=args.s3_endpoint_url or environ.get(ENV_S3_ENDPOINT_URL) or None,
        import_workers=workers,
        faults=FaultSettings.from_mapping(values),
        log_level=args.log_level,
        lock_wait_s=float(environ.get(ENV_LOCK_WAIT_S) or 15.0),
        enable_faults=enable_faults,
        credentials=credentials,
        body_timeout_s=float(environ.get(ENV_BODY_TIMEOUT_S) or 10.0),
        transition_s=_first_float(
            args.transition_seconds, environ.get(ENV_TRANSITION_S), DEFAULT_TRANSITION_S
        ),
        datastore_creation_s=_first_float(
            args.datastore_creation_seconds, environ.get(ENV_CREATE_S), DEFAULT_TRANSITION_S
        ),
        region=args.region or environ.get(ENV_REGION) or environ.get("AWS_REGION") or DEFAULT_REGION,
        account_id=args.account_id or environ.get(ENV_ACCOUNT_ID) or DEFAULT_ACCOUNT_ID,
    )


def _first_float(*values: object) -> float:
    for value in values:
        if value is not None and value != "":
            result = float(value)  # type: ignore[arg-type]
            if result < 0:
                raise ValueError(f"transition seconds must be >= 0, got {result}")
            return result
    raise ValueError("no value")


def client_environment(settings: ServeSettings) -> dict[str, str]:
    """The environment a client (AWS CLI v1/v2, boto3) needs to talk to this server as it would to AWS.

    ``AWS_DISABLE_HOST_PREFIX_INJECTION`` matters for the data plane: without it the CLI and boto3 send
    GetImageFrame/GetImageSetMetadata/SearchImageSets to ``runtime-<host>``, which does not resolve."""
    return {
        "AWS_ENDPOINT_URL_MEDICAL_IMAGING": f"http://{settings.host}:{settings.port}",
        "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
        "AWS_DEFAULT_REGION": settings.region,
    }


def serve(settings: ServeSettings) -> None:
    import uvicorn  # heavy imports only when serving

    from .http_protocol import head_timeout_protocol
    from .server import create_app

    app = create_app(settings)
    logger.info(
        "ahi-local serving %s on http://%s:%d (SigV4 %s, fault injection %s); clients (aws CLI, boto3) "
        "need: %s",
        settings.data_dir,
        settings.host,
        settings.port,
        "required" if settings.credentials else "off",
        "enabled" if settings.enable_faults else "off",
        " ".join(f"{k}={v}" for k, v in client_environment(settings).items()),
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        http=head_timeout_protocol(settings.body_timeout_s),  # uvicorn's h11, with a deadline for the head
        loop="asyncio",
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


def run_import(args: argparse.Namespace) -> int:
    """``ahi-local import``: returns 0 when every file was imported, 1 otherwise."""
    from ahi_connector.client import make_ahi_client, make_client
    from devstack.importing import create_datastore, import_folder

    ahi = make_ahi_client(endpoint_url=args.endpoint_url)
    s3 = make_client("s3", endpoint_url=args.s3_endpoint_url, max_attempts=5)
    datastore_id = args.datastore_id
    if not datastore_id:
        datastore_id = create_datastore(ahi, args.datastore_name)  # waits until ACTIVE, as AWS needs
        logger.info("created datastore %s", datastore_id)
    result = import_folder(ahi, s3, datastore_id, args.folder, args.bucket, timeout_s=args.timeout)
    summary = {
        "datastoreId": datastore_id,
        "jobId": result.job_id,
        "jobStatus": result.job_status,
        "message": result.job_properties.get("message"),
        "imageSetIds": result.image_set_ids,
        "imported": len(result.success),
        "failures": result.failure,
    }
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0 if result.job_status == "COMPLETED" and not result.failure else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=args.log_level.upper(), format=log_format)
    if args.command == "import":
        return run_import(args)
    try:
        settings = settings_from_args(args, default_environ())
    except Exception as exc:
        logger.error("invalid settings: %s", exc)
        return 2
    try:
        serve(settings)
    except RuntimeError as exc:  # e.g. the data dir is locked by another server
        logger.error("ahi-local cannot start: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
