"""``container/serve``: the image's entrypoint (``docker run <image> serve``), also runnable on a host.

Starts MMS with our handler service, multi-model (``SAGEMAKER_MULTI_MODEL=true``, models arrive via ``POST
/models``) or single-model (the model extracted at ``$SAGEMAKER_BASE_DIR/model`` served on ``/invocations``,
as real-time and asynchronous endpoints use it). Runs until SIGTERM/SIGINT, then stops Java and every Python
worker by PID. Exit code: 0 after a requested stop, 1 if MMS failed or died.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from container.model_server import ModelServer, ModelServerError
from container.settings import Settings, SettingsError

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="serve",
        description="Serve the spleen model with multi-model-server (SageMaker container contract).",
    )
    p.add_argument("command", nargs="?", default="serve", choices=["serve"], help="SageMaker passes 'serve'")
    p.add_argument("--host", help="bind address (default $SPLEEN_BIND_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default $SAGEMAKER_BIND_TO_PORT or 8080)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--multi-model", dest="multi_model", action="store_true", default=None)
    mode.add_argument("--single-model", dest="multi_model", action="store_false")
    p.add_argument(
        "--model-dir", type=Path, help="single-model mode: extracted model.tar.gz (default <base>/model)"
    )
    p.add_argument("--handler", help="handler service module (default container.handler_service)")
    p.add_argument("--workers", type=int, help="workers per model (default: one per GPU, else 1)")
    p.add_argument(
        "--runtime-dir", type=Path, help="MMS config/pid/sockets (default: a fresh temporary directory)"
    )
    return p


def resolve_settings(args: argparse.Namespace, base: Settings) -> Settings:
    """Command-line flags override the environment."""
    overrides = {
        key: value
        for key, value in {
            "host": args.host,
            "port": args.port,
            "multi_model": args.multi_model,
            "handler": args.handler,
            "workers": args.workers,
        }.items()
        if value is not None
    }
    return replace(base, **overrides)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(levelname)s] %(name)s - %(message)s")
    args = _parser().parse_args(argv)
    try:
        settings = resolve_settings(args, Settings.from_env())
    except SettingsError as exc:
        logger.error("bad configuration: %s", exc)
        return 2
    model_dir = None
    if not settings.multi_model:
        model_dir = (args.model_dir or settings.model_dir).resolve()
        if not model_dir.is_dir():
            logger.error(
                "single-model mode: model directory %s does not exist (extract model.tar.gz there)", model_dir
            )
            return 2
    runtime_dir = args.runtime_dir or settings.runtime_dir
    own_runtime_dir = runtime_dir is None
    runtime_dir = Path(tempfile.mkdtemp(prefix="spleen-serve-")) if runtime_dir is None else runtime_dir
    runtime_dir.mkdir(parents=True, exist_ok=True)

    server = ModelServer(settings, runtime_dir, model_dir)
    stop_requested = threading.Event()

    def _on_signal(signo: int, _frame: object) -> None:
        logger.info("received %s; shutting down", signal.Signals(signo).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    code = 0
    try:
        server.start()
        if server.wait_ready(stop=stop_requested):
            logger.info("serving on %s", server.base_url)
        ticks = 0
        while not stop_requested.wait(0.5):
            ticks += 1
            if ticks % 10 == 0:
                server.reap_orphans()
            if model_dir is None:
                server.log_new_load_failures()
            elif server.load_failures():
                logger.error("the model failed to load: %s", server.load_failures()[-1])
                code = 1
                break
            if server.poll() is not None:
                logger.error("MMS exited unexpectedly with code %s", server.poll())
                code = 1
                break
    except ModelServerError as exc:
        logger.error("%s", exc)
        code = 1
    finally:
        server.stop()
        if own_runtime_dir:
            shutil.rmtree(runtime_dir, ignore_errors=True)
    logger.info("serve stopped (exit code %d)", code)
    return code


if __name__ == "__main__":
    sys.exit(main())
