"""Exceptions fastq raises. The Rust core raises these same classes (see ``_core.pyi``)."""

from __future__ import annotations

import builtins


class FastqError(Exception):
    """Base class of every fastq error."""


class ConfigurationError(FastqError, ValueError):
    """A setting is unknown, mistyped or has an invalid value."""


# -- codec ---------------------------------------------------------------------------------------
class DecodeError(FastqError, ValueError):
    """A message body or envelope could not be decoded."""


class EncodeError(FastqError, TypeError):
    """A value cannot be serialized with the chosen serializer."""


class ContentDisallowed(DecodeError):
    """The content type is not in ``accept_content`` (pickle and yaml are refused by default)."""


class UnknownContentType(DecodeError):
    """No codec exists for this content type."""


class InvalidMessage(DecodeError):
    """Well-formed data that is not a valid task message (missing ``task`` header, bad body…)."""


# -- runtime -------------------------------------------------------------------------------------
class BrokerError(FastqError):
    """The broker refused a command (a key of the wrong type, out of memory, a script error)."""


class BrokerConnectionError(BrokerError, ConnectionError):
    """The broker cannot be reached, went away or is not ready; retrying later may work."""


class BrokerInterruptedError(BrokerConnectionError):
    """A call to the broker was interrupted by a signal (a handler ran, or the process was stopped
    and resumed by a debugger or profiler): the broker is fine, but the command may have run and
    its connection is reopened, as after a dropped one. Retrying at once may work."""


class QueueNotFound(ConfigurationError, KeyError):
    """A task was routed to a queue that is not in ``task_queues`` while
    ``task_create_missing_queues`` is off."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BackendError(FastqError):
    """The result backend failed or is not configured."""


class ResultsRefused(BackendError):
    """The backend stored a batch of results except some it refused for their key alone (on
    Redis, a value of another type where the result goes): storing them again cannot help, so
    a worker logs each and goes on. ``refused`` maps their task ids to the backend's reason."""

    def __init__(self, message: str, refused: dict[str, str]) -> None:
        super().__init__(message)
        self.refused = refused


class NotSupportedByBackend(BackendError, NotImplementedError):
    """The result backend cannot do this (a chord or a saved group on rpc://). Celery raises
    ``NotImplementedError`` there, and this is one."""


class NotRegistered(FastqError, KeyError):
    """A message names a task this worker does not have."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "task not registered"


class TimeoutError(FastqError, builtins.TimeoutError):
    """``AsyncResult.get()`` gave up waiting."""


class TaskError(FastqError):
    """A task raised an exception whose type cannot be imported here; names the original type."""

    def __init__(self, exc_type: str, exc_module: str, message: str) -> None:
        super().__init__(f"{exc_module}.{exc_type}: {message}")
        self.exc_type = exc_type
        self.exc_module = exc_module
        self.message = message


class SecurityError(FastqError):
    """A result names an exception type that is not an exception (refused on decode)."""


class TaskRevokedError(FastqError):
    """The task was revoked or expired before it ran."""


class TaskPredicate(FastqError):
    """Raised by a task to tell the worker what to do with it instead of storing an outcome
    (Celery's base of ``Retry``, ``Reject`` and ``Ignore``)."""


class Retry(TaskPredicate):
    """Raised by ``Task.retry()`` to end the current run; the worker re-publishes the task."""

    def __init__(
        self, message: str = "", exc: BaseException | None = None, when: float | None = None
    ) -> None:
        super().__init__(message)
        self.exc = exc
        self.when = when


class SoftTimeLimitExceeded(FastqError):
    """Raised inside a task when its ``soft_time_limit`` passes; it may clean up and return."""


class TimeLimitExceeded(FastqError):
    """The task ran past its hard ``time_limit``; its process was replaced."""


class WorkerLostError(FastqError):
    """The process running the task died before it finished (a prefork child killed or
    crashed while running a task acknowledged before it started)."""


class MaxRetriesExceededError(FastqError):
    """``Task.retry()`` was called more than ``max_retries`` times."""


class Reject(TaskPredicate):
    """Raised by a task to reject its message, optionally requeueing it."""

    def __init__(self, reason: str = "", requeue: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.requeue = requeue


class Ignore(TaskPredicate):
    """Raised by a task so that no state is stored for it."""


class IncompleteStream(FastqError):
    """``AsyncResult.collect()`` reached a result that is not ready (Celery's name)."""


class ChordError(FastqError):
    """A chord's body did not run: a header task failed, or the body could not be sent."""


#: fastq errors that Celery also defines in ``celery.exceptions``; results name Celery's module
#: so a Celery client re-creates its own type, and fastq maps them back by name.
CELERY_EQUIVALENTS = frozenset(
    {
        "NotRegistered",
        "TaskRevokedError",
        "MaxRetriesExceededError",
        "Retry",
        "Reject",
        "Ignore",
        "ChordError",
        "SoftTimeLimitExceeded",
        "TimeLimitExceeded",
        "WorkerLostError",
    }
)
