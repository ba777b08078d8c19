"""Training side: synthetic CT phantoms, training, evaluation, calibration and ``model.tar.gz`` packaging.

The serve-time bundle code (find, read and load a MONAI bundle) lives in :mod:`app.bundle`; this package
writes and checks the bundle kept in this repository at :data:`SOURCE_BUNDLE_DIR`.
"""

from pathlib import Path

#: The ``spleen_ct_segmentation`` bundle committed in this repository (configs + ``models/model.ts``).
SOURCE_BUNDLE_DIR = Path(__file__).resolve().parent / "spleen_ct_segmentation"
