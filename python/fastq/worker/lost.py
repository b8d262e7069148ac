"""The outcome of a task whose prefork child did not finish it, recorded by the supervisor.

The supervisor kills a child whose task passed its hard time limit or was revoked with
``terminate=True``, and a child may die on its own (SIGKILL, a crash) while it runs a task that
was acknowledged before it started. Nobody else can record those outcomes, so the supervisor
does, as Celery's main process does: FAILURE ``TimeLimitExceeded``, REVOKED ("terminated"),
FAILURE ``WorkerLostError``; then what the child would have sent next (a chord part, the failure
of the rest of a chain, errbacks). It knows the task only from the child's start report, so the
child encodes there what a stored result and those follow-ups need (``reports.encode_request``):
above all the client's ``reply_to``, without which an ``rpc://`` result has nowhere to go.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from fastq import errors, signals, states
from fastq.app import App
from fastq.execution.followups import on_failure, on_revoked
from fastq.execution.tracer import keeps_result
from fastq.task import Context
from fastq.worker.reports import ReportedTask, decode_request

log = logging.getLogger("fastq.worker")

#: Why the supervisor records a task (``Supervisor.on_lost``).
TIME_LIMIT = "time limit"
TERMINATED = "terminated"
WORKER_LOST = "worker lost"
#: A late-acknowledged task that killed its child ``QUARANTINE_AFTER`` times: not run again.
QUARANTINED = "quarantined"


def record_lost(
    app: App, running: ReportedTask, reason: str, exit_code: int, hostname: str
) -> None:
    """Stores the outcome of the task ``running`` its child did not finish, then sends what
    follows from it. Raises ``FastqError`` only when the result could not be stored (the
    supervisor retries with ``store_lost``); the follow-ups are sent either way."""
    request = decode_request(running, hostname)
    task = app.tasks.get(running.name)
    task_id = running.task_id
    exc = lost_error(reason, exit_code)
    stored: errors.FastqError | None = None
    try:
        _store(app, task, request, reason, exc)
    except errors.FastqError as error:
        stored = error
    if reason == TERMINATED:
        signum = -exit_code if exit_code < 0 else None
        if signals.task_revoked.receivers:
            signals.task_revoked.send(
                task, request=request, terminated=True, signum=signum, expired=False
            )
        on_revoked(app, request, TERMINATED)
    else:
        if reason != TIME_LIMIT:
            log.error("task %s[%s] failed: %r", running.name, task_id, exc)
        if signals.task_failure.receivers:
            signals.task_failure.send(
                task,
                task_id=task_id,
                exception=exc,
                args=request.args,
                kwargs=request.kwargs,
                traceback=None,
                einfo=None,
            )
        on_failure(app, request, exc, None)
    if stored is not None:
        raise stored


def store_lost(app: App, running: ReportedTask, reason: str, exit_code: int, hostname: str) -> None:
    """Only the stored state of ``record_lost``: its retry once the backend answers again."""
    request = decode_request(running, hostname)
    _store(app, app.tasks.get(running.name), request, reason, lost_error(reason, exit_code))


def lost_error(reason: str, exit_code: int) -> BaseException:
    """What a task its child did not finish is recorded as having raised."""
    if reason == TERMINATED:
        return errors.TaskRevokedError(TERMINATED)
    if reason == TIME_LIMIT:
        return errors.TimeLimitExceeded("hard time limit exceeded")
    if reason == QUARANTINED:
        return errors.WorkerLostError(
            f"Worker exited prematurely: {_exit_status(exit_code)}. The task killed its "
            "worker child each time it ran and was quarantined (not run again)."
        )
    return errors.WorkerLostError(f"Worker exited prematurely: {_exit_status(exit_code)}.")


def _store(app: App, task: Any, request: Context, reason: str, exc: BaseException) -> None:
    if reason == TERMINATED:
        app.backend.mark_as_revoked(request.id or "", TERMINATED, request)
    elif keeps_result(app, task, request, states.FAILURE):
        app.backend.mark_as_failure(request.id or "", exc, None, request)


def _exit_status(code: int) -> str:
    """Billiard's wording: ``signal 9 (SIGKILL)``, ``exitcode 1``."""
    if code < 0:
        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"exitcode {code}"
