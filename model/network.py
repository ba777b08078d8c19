"""The bundle's network, built from ``network_def`` in ``configs/inference.json`` (one source of truth).

``build_network()`` gives the official spleen_ct_segmentation UNet (channels 16..256, strides 2x4, 2 residual
units, batch norm, 1 -> 2 classes). ``channels`` is the single switch for a narrower variant; everything else
stays the official definition, and any variant is loaded the same way (TorchScript ``models/model.ts``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from app.bundle import read_configs
from model import SOURCE_BUNDLE_DIR

OFFICIAL_CHANNELS = (16, 32, 64, 128, 256)


def network_def(channels: Sequence[int] | None = None) -> dict[str, Any]:
    """The ``network_def`` config of the committed bundle, optionally with other ``channels``."""
    _, inference = read_configs(SOURCE_BUNDLE_DIR)
    net = copy.deepcopy(inference["network_def"])
    if channels is not None:
        if len(channels) != len(net["strides"]) + 1:
            raise ValueError(
                f"channels {list(channels)} must have {len(net['strides']) + 1} entries "
                f"(strides {net['strides']})"
            )
        net["channels"] = [int(c) for c in channels]
    return net


def build_network(channels: Sequence[int] | None = None) -> Any:
    """Instantiate the UNet described by :func:`network_def` (a ``torch.nn.Module``)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser({"network_def": network_def(channels)})
    return parser.get_parsed_content("network_def")
