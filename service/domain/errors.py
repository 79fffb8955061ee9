"""One exception root for everything the API can answer; each subclass's docstring is its default message.

The HTTP status and the envelope code live on the class, so the error middleware maps any of them without
knowing the individual cases.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Server internal error."""

    code: int = 28200
    http_status: int = 500

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (type(self).__doc__ or "").strip()
        super().__init__(self.message)


class InvalidParameter(ServiceError):
    """The schedule request is invalid."""

    code = 28100
    http_status = 400


class AuthenticationFailed(ServiceError):
    """Basic authentication failed."""

    code = 28101
    http_status = 401


class ScheduleNotFound(ServiceError):
    """Request schedule operation doesn't exist."""

    code = 28104
    http_status = 404


class NoPushTarget(ServiceError):
    """The push task is invalid. There is no push target for the scheduled time."""

    code = 28105
    http_status = 404


class InternalError(ServiceError):
    """Server internal error."""


class DatabaseUnavailable(ServiceError):
    """Execute action timeout, please try later again."""

    code = 28203
    http_status = 503


class RunRefused(ServiceError):
    """The task cannot be run by its webhook now: it is disabled or expired."""

    code = 28409
    http_status = 409


class TooManyCalls(ServiceError):
    """Too many webhook calls for this task; try again after Retry-After seconds."""

    code = 28429
    http_status = 429

    def __init__(self, message: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
