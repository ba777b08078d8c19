"""Service errors, shaped like AWS rest-json errors (``x-amzn-ErrorType`` header + ``{"message": ...}``)."""

from __future__ import annotations


class ServiceError(Exception):
    """An error answered to the client. ``code`` is the AWS error type, ``status`` the HTTP status."""

    code = "InternalServerException"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(ServiceError):
    code = "ValidationException"
    status = 400


class NotFoundError(ServiceError):
    code = "ResourceNotFoundException"
    status = 404


class ConflictError(ServiceError):
    code = "ConflictException"
    status = 409


class ThrottlingError(ServiceError):
    code = "ThrottlingException"
    status = 429


class InternalError(ServiceError):
    code = "InternalServerException"
    status = 500


class StorageError(InternalError):
    """The store could not write (disk full, file size limit, I/O error): a server failure, never the
    client's; import jobs that meet it fail whole, leaving no partial image set."""


class UnknownOperationError(ServiceError):
    code = "UnknownOperationException"
    status = 404
