"""Errors of the spleen segmentation application, each with the HTTP status a server edge should answer.

Every error meant for a client carries ``http_status`` and a message that names the IDs involved (datastore,
image set, study, series) and what to do. The container handler maps ``http_status`` to the response; anything
that is not an :class:`AppError` (nor a connector ``AHIError``, which has its own ``http_status``) is a 500
with a request ID.
"""

from __future__ import annotations


class AppError(Exception):
    """Root of the application's own errors."""

    http_status: int = 500


class RequestError(AppError, ValueError):
    """The request is malformed: wrong keys, bad IDs, missing input. Fix the request and send it again."""

    http_status = 400


class InputNotFoundError(AppError):
    """The request is well-formed but names data that does not exist (no image set for a study, empty
    folder)."""

    http_status = 404


class SeriesSelectionError(AppError):
    """The input holds no series the spleen model can segment. Subclasses say why; all are client errors
    (422)."""

    http_status = 422


class NoCTSeriesError(SeriesSelectionError):
    """No series with Modality CT in the input."""


class LocalizerOnlyError(SeriesSelectionError):
    """The only CT series are localizer / scout / topogram images (2-D projections, not a volume)."""


class NonAxialSeriesError(SeriesSelectionError):
    """The CT series are not axial (the model was trained on axial stacks)."""


class TooFewSlicesError(SeriesSelectionError):
    """The CT series has fewer slices than the application's documented minimum."""


class UnsupportedPixelFormatError(SeriesSelectionError):
    """The CT series is not single-sample grayscale (e.g. RGB secondary captures)."""


class ModelError(AppError):
    """The model bundle cannot be used (missing, malformed, wrong output). An operator problem, not a client
    one."""

    http_status = 500


class InferenceOutputError(AppError):
    """The model produced an output that cannot be turned into a segmentation of the source series."""

    http_status = 500
