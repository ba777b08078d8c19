"""The spleen bundle loaded once per process, handed to the SDK's bundle operator through the AppContext.

MONAI Deploy's ``MonaiBundleInferenceOperator`` looks for a loaded model in ``app_context.models`` before it
falls back to ``torch.jit.load`` of ``<bundle>/models/model.ts`` — which it does on **every** ``compute()``
when the AppContext has no model (measured: once per run). The application is composed again for every run
(holoscan calls ``compose()`` on each ``Application.run()``), so the operator instance cannot hold the network
either.

:class:`BundleModel` is an SDK ``Model`` whose ``path`` is the bundle directory (the operator parses
``configs/metadata.json`` + ``configs/inference.json`` from it, ~20 ms per run) and whose ``predictor`` is the
TorchScript network loaded once by :func:`app.bundle.load_bundle` on the bundle's configured device. One
AppContext holding it is reused for every run, so the weights are read and moved to the device exactly once.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai.deploy.core import AppContext
from monai.deploy.core.models import Model
from pydicom.uid import generate_uid

from app.bundle import MODEL_REL, BundleError, find_bundle_dir, load_bundle

from .errors import ModelError

logger = logging.getLogger(__name__)

#: Model name used in the AppContext (the SDK operator's ``model_name``).
MODEL_NAME = "spleen_ct_segmentation"
#: The network output label that is the spleen (channel_def of the bundle's ``pred`` output).
SPLEEN_LABEL_NAME = "spleen"


@dataclass(frozen=True)
class ModelIdentity:
    """What the report and the SEG's Contributing Equipment say about the model."""

    name: str
    version: str
    bundle_dir: Path
    device: str
    sha256: str
    device_uid: str
    spleen_label: int


def _spleen_label(metadata: dict[str, Any], bundle_dir: Path) -> int:
    outputs = metadata.get("network_data_format", {}).get("outputs", {})
    for output in outputs.values():
        for value, name in (output.get("channel_def") or {}).items():
            if str(name).strip().lower() == SPLEEN_LABEL_NAME:
                return int(value)
    raise ModelError(
        f"bundle {str(bundle_dir)!r}: configs/metadata.json network_data_format.outputs has no channel named "
        f"{SPLEEN_LABEL_NAME!r}; this application segments the spleen"
    )


class BundleModel(Model):
    """SDK Model for a bundle directory with its TorchScript network already loaded (``predictor``)."""

    model_type = "monai_bundle_directory"

    def __init__(self, bundle_path: str | Path, device: str | None = None) -> None:
        bundle_path = Path(bundle_path)
        if bundle_path.is_file() and bundle_path.name == MODEL_REL.name:  # -m <bundle>/models/model.ts
            bundle_path = bundle_path.parent.parent
        try:
            bundle_dir = find_bundle_dir(bundle_path)
            loaded = load_bundle(bundle_dir, device=device)
        except BundleError as exc:
            raise ModelError(f"cannot load the spleen bundle from {str(bundle_path)!r}: {exc}") from exc
        super().__init__(str(bundle_dir), MODEL_NAME)
        self.predictor = loaded.network
        digest = hashlib.sha256((bundle_dir / MODEL_REL).read_bytes()).hexdigest()
        metadata = loaded.metadata
        self.identity = ModelIdentity(
            name=str(metadata.get("name", MODEL_NAME)),
            version=str(metadata.get("version", "")),
            bundle_dir=bundle_dir,
            device=str(loaded.device),
            sha256=digest,
            device_uid=generate_uid(entropy_srcs=[digest]),
            spleen_label=_spleen_label(metadata, bundle_dir),
        )
        logger.info(
            "loaded bundle %s (%s %s) on %s",
            bundle_dir,
            self.identity.name,
            self.identity.version,
            loaded.device,
        )


def make_app_context(model: BundleModel, output_dir: str | Path | None = None) -> AppContext:
    """An SDK AppContext whose ``models`` is ``model`` (reused across runs; see the module doc).

    The context is created with the bundle's ``model.ts`` as its model path (the SDK's factory then makes a
    lazy TorchScriptModel that never loads, and no NamedModel warning about ``configs/``), then given
    ``model``.
    """
    args = {"model": str(Path(model.path) / MODEL_REL)}
    if output_dir is not None:
        args["output"] = str(output_dir)
    context = AppContext(args)
    context.models = model
    return context
