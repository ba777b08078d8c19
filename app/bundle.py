"""The ``spleen_ct_segmentation`` MONAI bundle: locate, write and load it.

A bundle is a directory with ``configs/metadata.json``, ``configs/inference.json`` and ``models/model.ts``
(TorchScript). ``find_bundle_dir`` only touches the file system (light imports: usable from the container's
model-loading path before torch is imported). ``write_bundle`` and ``load_bundle`` import torch/monai lazily.

``write_bundle`` also embeds both configs in ``model.ts`` as TorchScript extra files (``metadata.json``,
``inference.json``), so ``model.ts`` alone is a valid MONAI Deploy model (``-m model.ts``), exactly like the
official bundle's exported TorchScript.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

BUNDLE_NAME = "spleen_ct_segmentation"
METADATA_REL = Path("configs") / "metadata.json"
INFERENCE_REL = Path("configs") / "inference.json"
MODEL_REL = Path("models") / "model.ts"
#: The bundle committed in this repository (configs + our trained model.ts).
#: Transforms that read/write files; stripped for in-memory inference (as MONAI Deploy's bundle operator
# does).
FILE_IO_TRANSFORMS = ("LoadImage", "SaveImage")


class BundleError(Exception):
    """A bundle is missing, ambiguous or malformed. The message names the path and the fix."""


class BundleNotFoundError(BundleError, FileNotFoundError):
    """No bundle (configs/metadata.json + models/model.ts) under the given root."""


def _is_bundle(path: Path) -> bool:
    return (path / METADATA_REL).is_file() and (path / MODEL_REL).is_file()


def _half_bundles(root: Path, max_depth: int) -> list[Path]:
    """Directories that have configs/metadata.json but no models/model.ts (for a helpful error)."""
    found = []
    for meta in sorted(root.glob("configs/metadata.json")) + sorted(root.glob("*/configs/metadata.json")):
        if not (meta.parent.parent / MODEL_REL).is_file():
            found.append(meta.parent.parent)
    if max_depth >= 2:
        for meta in sorted(root.glob("*/*/configs/metadata.json")):
            if not (meta.parent.parent / MODEL_REL).is_file():
                found.append(meta.parent.parent)
    return found


def _subdirs(folder: Path) -> list[Path]:
    """Entries of ``folder``; none when it cannot be read (a bundle is never in an unreadable folder)."""
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def find_bundle_dir(root: str | Path, max_depth: int = 2) -> Path:
    """Return the bundle directory inside ``root`` (an extracted ``model.tar.gz``, or the bundle itself).

    A bundle directory holds ``configs/metadata.json`` and ``models/model.ts``. ``root`` itself and its
    sub-directories down to ``max_depth`` levels are searched (``code/`` and hidden folders are skipped).

    Raises:
        BundleNotFoundError: ``root`` does not exist or holds no bundle (its contents are never listed).
        BundleError: more than one bundle is present, or ``configs/metadata.json`` is not valid JSON.
    """
    root = Path(root)
    if not root.is_dir():
        raise BundleNotFoundError(
            f"model directory {str(root)!r} does not exist or is not a directory; "
            "pass the folder where model.tar.gz was extracted"
        )
    candidates: list[Path] = [root] if _is_bundle(root) else []
    if not candidates:
        level = [root]
        for _ in range(max_depth):
            level = sorted(
                p
                for d in level
                for p in _subdirs(d)
                if p.is_dir() and not p.name.startswith(".") and p.name != "code"
            )
            candidates += [p for p in level if _is_bundle(p)]
    if not candidates:
        half = _half_bundles(root, max_depth)
        if half:
            raise BundleNotFoundError(
                f"bundle {str(half[0])!r} has {METADATA_REL} but no {MODEL_REL}; "
                f"add the TorchScript model there (e.g. rebuild with `make model-archive`)"
            )
        # The folder's contents are not named: a management API caller may point at any host path.
        raise BundleNotFoundError(
            f"no MONAI bundle ({METADATA_REL} + {MODEL_REL}) under {str(root)!r} (searched {max_depth} "
            f"levels down); expected the layout {BUNDLE_NAME}/configs/metadata.json, "
            f"{BUNDLE_NAME}/models/model.ts"
        )
    if len(candidates) > 1:
        raise BundleError(
            f"more than one bundle under {str(root)!r}: {[str(c) for c in candidates]}; "
            "a model archive must hold exactly one"
        )
    bundle = candidates[0]
    try:
        json.loads((bundle / METADATA_REL).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle {str(bundle)!r}: {METADATA_REL} is not valid JSON: {exc}") from exc
    logger.debug("found bundle %s under %s", bundle, root)
    return bundle


def read_configs(bundle_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (metadata, inference) config dicts of a bundle directory."""
    bundle_dir = Path(bundle_dir)
    out = []
    for rel in (METADATA_REL, INFERENCE_REL):
        try:
            out.append(json.loads((bundle_dir / rel).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise BundleError(f"bundle {str(bundle_dir)!r}: cannot read {rel}: {exc}") from exc
    return out[0], out[1]


def write_bundle(
    bundle_dir: str | Path,
    network: Any,
    metadata: dict[str, Any],
    inference: dict[str, Any],
) -> Path:
    """Script ``network`` (a torch ``nn.Module``) into ``bundle_dir/models/model.ts`` and write the configs.

    ``metadata`` and ``inference`` (the two bundle configs, e.g. those of ``model.SOURCE_BUNDLE_DIR``) are
    written to ``configs/`` and embedded in ``model.ts`` as extra files. Returns the path of ``model.ts``.
    """
    import torch

    bundle_dir = Path(bundle_dir)
    texts = {
        "metadata.json": json.dumps(metadata, indent=4) + "\n",
        "inference.json": json.dumps(inference, indent=4) + "\n",
    }
    (bundle_dir / "configs").mkdir(parents=True, exist_ok=True)
    (bundle_dir / "models").mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (bundle_dir / "configs" / name).write_text(text)
    was_training = network.training
    network = network.eval().cpu()
    try:
        scripted = torch.jit.script(network)
    finally:
        network.train(was_training)
    model_path = bundle_dir / MODEL_REL
    # Saved under its final file name (torch names the zip's root folder after it; MONAI Deploy reads
    # <stem>/extra/<config>.json), then moved into place atomically.
    with tempfile.TemporaryDirectory(dir=model_path.parent) as tmp_dir:
        tmp = Path(tmp_dir) / model_path.name
        torch.jit.save(scripted, str(tmp), _extra_files={k: v.encode() for k, v in texts.items()})
        tmp.replace(model_path)
    logger.info("wrote bundle %s (%.1f MB model.ts)", bundle_dir, model_path.stat().st_size / 1e6)
    return model_path


def copy_bundle(src: str | Path, dst: str | Path) -> Path:
    """Copy a bundle directory (configs + models/model.ts only) to ``dst``; return ``dst``."""
    src, dst = find_bundle_dir(src), Path(dst)
    for rel in (METADATA_REL, INFERENCE_REL, MODEL_REL):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst / rel)
    return dst


@dataclass
class LoadedBundle:
    """A bundle parsed the way MONAI Deploy's ``MonaiBundleInferenceOperator`` does.

    ``preprocessing``/``postprocessing`` are the bundle's ``Compose`` objects with file IO transforms removed
    when ``strip_io`` was requested; ``network`` is the TorchScript module from ``models/model.ts`` on
    ``device``.
    """

    bundle_dir: Path
    metadata: dict[str, Any]
    parser: Any
    device: Any
    network: Any
    preprocessing: Any
    inferer: Any
    postprocessing: Any

    @property
    def input_key(self) -> str:
        return next(iter(self.metadata["network_data_format"]["inputs"]))

    @property
    def output_key(self) -> str:
        return next(iter(self.metadata["network_data_format"]["outputs"]))


def _strip(compose: Any, prefixes: tuple[str, ...]) -> Any:
    compose.transforms = tuple(t for t in compose.transforms if not type(t).__name__.startswith(prefixes))
    return compose


def load_bundle(
    bundle_dir: str | Path,
    config_name: str = "inference",
    device: Any = None,
    strip_io: tuple[str, ...] = ("SaveImage",),
) -> LoadedBundle:
    """Parse a bundle's configs with ``monai.bundle.ConfigParser`` and load ``models/model.ts``.

    Mirrors MONAI Deploy's bundle operator: ``device``, ``preprocessing``, ``inferer`` and ``postprocessing``
    come from the config; the network is the TorchScript file (never ``network_def``), so any drop-in
    ``model.ts`` with 1 input channel and 2 output channels works. ``device`` overrides the config's device.
    """
    import torch
    from monai.bundle import ConfigParser

    bundle_dir = find_bundle_dir(bundle_dir)
    metadata, _ = read_configs(bundle_dir)
    parser = ConfigParser()
    parser.read_meta(str(bundle_dir / METADATA_REL))
    parser.read_config(str(bundle_dir / "configs" / f"{config_name}.json"))
    parser["bundle_root"] = str(bundle_dir)
    dev = torch.device(device) if device is not None else parser.get_parsed_content("device")
    try:
        network = torch.jit.load(str(bundle_dir / MODEL_REL), map_location=dev).eval()
    except (RuntimeError, ValueError) as exc:
        raise BundleError(
            f"bundle {str(bundle_dir)!r}: {MODEL_REL} is not a loadable TorchScript file: {exc}"
        ) from exc
    return LoadedBundle(
        bundle_dir=bundle_dir,
        metadata=metadata,
        parser=parser,
        device=dev,
        network=network,
        preprocessing=_strip(parser.get_parsed_content("preprocessing", instantiate=True), strip_io),
        inferer=parser.get_parsed_content("inferer"),
        postprocessing=_strip(parser.get_parsed_content("postprocessing", instantiate=True), strip_io),
    )
