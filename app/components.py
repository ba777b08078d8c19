"""Connected components of a binary mask, with the connectivity the bundle's post-processing uses.

The bundle's ``KeepLargestConnectedComponentd`` (MONAI, ``connectivity=None``) joins voxels that touch by a
face, an edge or a corner (26-neighbourhood in 3D). The STL mesh and the threshold calibration use the same
rule through :func:`largest_component`, so "the largest component" means the same thing everywhere.
"""

from __future__ import annotations

import numpy as np


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the components of ``mask > 0`` with full connectivity; return (labels, number of components)."""
    from skimage.measure import label

    labels, count = label(np.asarray(mask) > 0, connectivity=np.asarray(mask).ndim, return_num=True)
    return np.asarray(labels), int(count)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """A boolean copy of ``mask`` holding only its largest component (all False when the mask is empty)."""
    labels, count = label_components(mask)
    if count <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(labels == int(np.argmax(sizes)))
