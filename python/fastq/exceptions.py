"""Celery's exception names (``celery.exceptions``), so ``from celery.exceptions import X`` becomes
``from fastq.exceptions import X`` when migrating.

Each name is the class fastq raises for that case, so ``except`` clauses written for Celery catch
what fastq raises. fastq's own names are in ``fastq.errors``; several of Celery's names stand for
one fastq class where fastq does not tell the cases apart (``BackendGetMetaError`` and
``BackendStoreError`` are both ``BackendError``). Names Celery has and fastq never raises are left
out on purpose (see docs/migrating.md): an ``except`` for them would catch nothing.
"""

from __future__ import annotations

from fastq.errors import (
    BackendError,
    BrokerConnectionError,
    ChordError,
    ConfigurationError,
    FastqError,
    Ignore,
    IncompleteStream,
    InvalidMessage,
    MaxRetriesExceededError,
    NotRegistered,
    QueueNotFound,
    Reject,
    Retry,
    SecurityError,
    SoftTimeLimitExceeded,
    TaskError,
    TaskPredicate,
    TaskRevokedError,
    TimeLimitExceeded,
    TimeoutError,
    WorkerLostError,
)

CeleryError = FastqError
ImproperlyConfigured = ConfigurationError
#: Celery re-exports kombu's: the broker cannot be reached (raised by ``delay`` and the worker).
OperationalError = BrokerConnectionError
#: A message that is not a task message fastq can run (bad headers, body or content type).
InvalidTaskError = InvalidMessage
BackendGetMetaError = BackendError
BackendStoreError = BackendError

__all__ = [
    "BackendError",
    "BackendGetMetaError",
    "BackendStoreError",
    "CeleryError",
    "ChordError",
    "Ignore",
    "ImproperlyConfigured",
    "IncompleteStream",
    "InvalidTaskError",
    "MaxRetriesExceededError",
    "NotRegistered",
    "OperationalError",
    "QueueNotFound",
    "Reject",
    "Retry",
    "SecurityError",
    "SoftTimeLimitExceeded",
    "TaskError",
    "TaskPredicate",
    "TaskRevokedError",
    "TimeLimitExceeded",
    "TimeoutError",
    "WorkerLostError",
]
