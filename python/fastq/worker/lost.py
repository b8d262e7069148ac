"""The outcome of a task whose prefork child did not finish it, recorded by the supervisor.

The supervisor kills a child whose task passed its hard time limit or was revoked with
``terminate=True``, and a child may die on its own (SIGKILL, a crash) while it runs a task that
was acknowledged before it started. Nobody else can record those outcomes, so the supervisor
does, as Celery's main process does: FAILURE ``TimeLimitExceeded``, REVOKED ("terminated"),
FAILURE ``WorkerLostError``; then what the child would have sent next (a chord part, the failure
of the rest of a chain, errbacks). It knows the task only from the child's start report, so the
child describes there what a stored result and those follow-ups need (``describe``): above all
the client's ``reply_to``, without which an ``rpc://`` result has nowhere to go.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Any

from fastq import _core, errors, signals, states
from fastq.app import App
from fastq.execution.followups import on_failure, on_revoked
from fastq.execution.tracer import keeps_result
from fastq.task import Context

if TYPE_CHECKING:
    from fastq.worker.supervisor import Running

log = logging.getLogger("fastq.worker")

JSON = "application/json"
#: Why the supervisor records a task (``Supervisor.on_lost``).
TIME_LIMIT = "time limit"
TERMINATED = "terminated"
WORKER_LOST = "worker lost"
#: A late-acknowledged task that killed its child ``QUARANTINE_AFTER`` times: not run again.
QUARANTINED = "quarantined"
#: Request fields a stored result or a follow-up reads, described when they are set.
_FIELDS = ("group", "group_index", "parent_id", "chord", "chain", "errbacks")
_ROUTE = ("reply_to", "correlation_id", "root_id", "parent_id", "group", "group_index")


def describe(request: Context, with_args: bool) -> str:
    """The child's side, per task: ``<reply_to or ->``, then `` <JSON>`` of the other request
    fields the supervisor would need, when any is set. A plain task from a fastq or Celery
    client has none of them, so this is usually the reply queue's name alone: no encoding."""
    reply_to = request.reply_to or "-"
    task_id = request.id
    fields: dict[str, Any] = {}
    if " " in reply_to or "\n" in reply_to:  # not a token: it goes in the JSON
        fields["reply_to"], reply_to = reply_to, "-"
    if request.correlation_id and request.correlation_id != task_id:
        fields["correlation_id"] = request.correlation_id
    if request.root_id and request.root_id != task_id:
        fields["root_id"] = request.root_id
    for name in _FIELDS:
        value = getattr(request, name)
        if value is not None:
            fields[name] = value
    if request.ignore_result:
        fields["ignore_result"] = True
    # What only the stored meta (``result_extended``) or an errback given the request reads.
    if with_args or request.errbacks:
        fields["args"] = request.args
        fields["kwargs"] = request.kwargs
        fields["retries"] = request.retries
        fields["queue"] = (request.delivery_info or {}).get("routing_key")
    if not fields:
        return reply_to
    if len(fields) == 1 and request.ignore_result:  # results off: the common case, encoded once
        return f"{reply_to} {_IGNORED}"
    return f"{reply_to} {_encode(fields)}"


def _encode(fields: dict[str, Any]) -> str:
    """JSON of ``fields``; what JSON cannot carry is left out (args first, then all but the
    route)."""
    try:
        return _core.dumps(fields, JSON).decode()
    except errors.EncodeError:  # values JSON cannot carry (pickle accepted): leave them out
        pass
    fields.pop("args", None)
    fields.pop("kwargs", None)
    try:
        return _core.dumps(fields, JSON).decode()
    except errors.EncodeError as exc:
        dropped = ", ".join(sorted(k for k in fields if k not in _ROUTE))
        log.warning(
            "a task's %s cannot be written as JSON (%s): should its child die, the supervisor "
            "records the task without them (no chord part, chain or errback follows)",
            dropped,
            exc,
        )
        return _core.dumps({k: fields[k] for k in _ROUTE if k in fields}, JSON).decode()


def request_of(running: Running, hostname: str) -> Context:
    """The supervisor's side: the request of the task ``running``, as the child described it."""
    fields: dict[str, Any] = {}
    reply_to, _, encoded = running.described.partition(" ")
    if encoded:
        try:
            decoded = _core.loads(encoded.encode(), JSON, [JSON])
            if isinstance(decoded, dict):
                fields = decoded
        except errors.DecodeError as exc:
            log.warning("task %s: unreadable start report (%s)", running.task_id, exc)
    if reply_to not in ("", "-"):
        fields["reply_to"] = reply_to
    queue = fields.pop("queue", None)
    return Context(
        **{
            "args": (),
            "kwargs": {},
            **fields,
            "id": running.task_id,
            "task": running.name or None,
            "hostname": hostname,
            "delivery_info": {"routing_key": queue} if queue else {},
            "delivery_tag": running.delivery_tag,
            "called_directly": False,
        }
    )


def record_lost(app: App, running: Running, reason: str, exit_code: int, hostname: str) -> None:
    """Stores the outcome of the task ``running`` its child did not finish, then sends what
    follows from it. Raises ``FastqError`` only when the result could not be stored (the
    supervisor retries with ``store_lost``); the follow-ups are sent either way."""
    request = request_of(running, hostname)
    task = app.tasks.get(running.name)
    task_id = running.task_id
    exc = _lost_error(reason, exit_code)
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


def store_lost(app: App, running: Running, reason: str, exit_code: int, hostname: str) -> None:
    """Only the stored state of ``record_lost``: its retry once the backend answers again."""
    request = request_of(running, hostname)
    _store(app, app.tasks.get(running.name), request, reason, _lost_error(reason, exit_code))


def _lost_error(reason: str, exit_code: int) -> BaseException:
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


_IGNORED = _encode({"ignore_result": True})
