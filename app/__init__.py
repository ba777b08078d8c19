"""AISpleenSegApp: spleen CT segmentation as a MONAI Deploy App SDK 4 app reading AWS HealthImaging.

Public entry: :class:`app.service.SpleenSegService` (with ``SegRequest`` / ``SegResult``); command line:
``python -m app -i INPUT -o OUTPUT -m MODEL``. Importing this package is light; the SDK (holoscan, torch) is
imported by ``app.service`` / ``app.app``.
"""
