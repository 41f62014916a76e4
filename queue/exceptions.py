"""Domain errors raised by the store; server/errors.py turns each into a problem document."""

from __future__ import annotations


class TaskrankError(Exception):
    """Base of every domain error; ``status`` is the HTTP status it maps to."""

    status = 400
    title = "Bad request"
    retry_after: int | None = None  # seconds, sent as Retry-After (the 503s)

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInputError(TaskrankError):
    """A request or file carries a value that cannot be used; ``errors`` lists each one."""

    status = 422
    title = "Invalid input"


class NoSuchProjectError(TaskrankError):
    status = 404
    title = "No such project"


class NoSuchItemError(TaskrankError):
    status = 404
    title = "No such item"


class NoSuchExpertError(TaskrankError):
    status = 404
    title = "No such expert"


class NoSuchTaskError(TaskrankError):
    status = 404
    title = "No such task"


class NoSuchWebhookError(TaskrankError):
    status = 404
    title = "No such webhook"


class NoSuchJobError(TaskrankError):
    status = 404
    title = "No such job"


class ProjectExistsError(TaskrankError):
    status = 409
    title = "Project exists"


class LeaseNotOpenError(TaskrankError):
    """The lease expired, was released or already labeled; a label was kept but not counted."""

    status = 409
    title = "Lease not open"


class InvalidCursorError(TaskrankError):
    """A paging cursor that no page hands out; the detail says what one looks like."""

    status = 400
    title = "Bad request"


class IdempotencyConflictError(TaskrankError):
    status = 422
    title = "Idempotency key reused"


class ModelIncompatibleError(TaskrankError):
    """A stored model was written by a newer taskrank or library than this process runs."""

    status = 500
    title = "Model incompatible"


class RedisNotDurableError(TaskrankError):
    """The Redis server's persistence settings can lose acknowledged labels."""

    status = 503
    title = "Redis not durable"


class NotReplicatedError(TaskrankError):
    """A write stored on its Redis master that no replica confirmed in time: a failover now
    could lose it, so it is not acknowledged (the request is safe to repeat)."""

    status = 503
    title = "Not yet replicated"
    retry_after = 1
