"""``python -m app -i INPUT -o OUTPUT_DIR -m MODEL_DIR``: run the spleen app once from the command line.

Arguments are the MONAI Deploy App SDK's (``-i/--input``, ``-o/--output``, ``-m/--model``, ``-l/--log-level``,
``-w/--workdir``); missing ones come from the SDK's environment variables ``HOLOSCAN_INPUT_PATH``,
``HOLOSCAN_OUTPUT_PATH`` and ``HOLOSCAN_MODEL_PATH`` (defaults ``input``, ``output``, ``models``), so the same
command works inside a MAP container. INPUT is a folder of DICOM files or a JSON request file
(``{"datastoreId", "imageSetId"}`` / ``{"datastoreId", "studyInstanceUid"}``, read through the standard boto3
chain, e.g. ``AWS_ENDPOINT_URL_MEDICAL_IMAGING``). MODEL is the bundle directory or a folder holding it (an
extracted model.tar.gz).

Exit status: 0 done, 2 the input cannot be processed (a client error: the message says why), 1 anything else.

Inside a MAP the packager runs ``python3 /opt/holoscan/app`` (this folder as a script directory), so the
imports below are absolute and the folder's parent is put on ``sys.path`` when there is no package context.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as `python /path/to/app` (MAP entrypoint) rather than `python -m app`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

logger = logging.getLogger("app")


@dataclass(frozen=True)
class CliPaths:
    input: Path
    output: Path
    model: Path
    log_level: str


def resolve_paths(argv: list[str]) -> CliPaths:
    """Parse SDK-style arguments (``argv[0]`` is the program) with the SDK's env-var fallbacks."""
    from monai.deploy.core import RuntimeEnv, parse_args

    args = parse_args([sys.executable, *argv[1:]] if argv else None)
    env = RuntimeEnv()
    return CliPaths(
        input=Path(args.input or env.input),
        output=Path(args.output or env.output),
        model=Path(args.model or env.model),
        log_level=args.log_level or "INFO",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    paths = resolve_paths(argv)
    logging.basicConfig(level=paths.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ahi_connector.errors import AHIError
    from app.errors import AppError
    from app.request import SegRequest
    from app.service import SpleenSegService

    try:
        request = SegRequest.from_input_path(paths.input)
        service = SpleenSegService(paths.model)
        result = service.run(request, paths.output)
    except (AppError, AHIError) as exc:
        status = int(getattr(exc, "http_status", 500))
        logger.error("%s (%s, HTTP %d)", exc, type(exc).__name__, status)
        return 2 if status < 500 else 1
    spleen = result.report["spleen"]
    logger.info(
        "done: spleen %.1f mL (%d voxels); SEG %s; STL %s; report %s",
        spleen["volumeMl"],
        spleen["voxelCount"],
        result.seg_path,
        result.stl_path,
        paths.output / "report.json",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
