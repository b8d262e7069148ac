"""What a finished task's message asks for next (its ``embed``): the worker side of the canvas.

On success the ``link`` callbacks and the next ``chain`` step get the result. On failure the
``link_error`` errbacks are called, and the chain steps that will now never run are marked
FAILURE, so whoever waits on a chain's result gets the error instead of waiting forever. Either
way a chord header task returns its part, and the worker that returns the last one sends the
body. Celery's worker does the same (``app/trace.py``, ``backends/base.py``); doing it its way is
what lets a workflow started by either side finish on the other's workers.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fastq import errors, states
from fastq.canvas import Signature, chord, group, signature
from fastq.execution.tracer import Outcome
from fastq.task import Context, Task

if TYPE_CHECKING:
    from fastq.app import App

log = logging.getLogger("fastq.worker")

#: Publishing a follow-up while the broker is unreachable: attempts, and the first wait (x3 each).
PUBLISH_ATTEMPTS = 4
PUBLISH_DELAY = 0.1


def send_followups(app: App, context: Context, outcome: Outcome) -> None:
    """Sends what follows ``context``'s task given its outcome. Never raises: what cannot be sent
    is logged with the ids needed to find it."""
    state, value = outcome.state, outcome.value
    if state == states.SUCCESS:
        if context.callbacks:
            _guard(context, "link callbacks", lambda: _send_callbacks(app, context, value))
        if context.chain:
            _guard(context, "next chain step", lambda: _send_next(app, context, value))
    elif state == states.FAILURE:
        on_failure(app, context, value, outcome.traceback)
        return  # it returned its chord part
    if context.chord and state in (states.SUCCESS, states.REVOKED):
        _guard(context, "chord part", lambda: _chord_part(app, context, state, value))


def on_revoked(app: App, context: Context, reason: str) -> None:
    """A task that will not run (expired, revoked) still returns its chord part, as in Celery,
    or its chord would never finish."""
    if context.chord:
        error = errors.TaskRevokedError(reason)
        _guard(context, "chord part", lambda: _chord_part(app, context, states.REVOKED, error))


def eager_embed(options: dict[str, Any]) -> dict[str, Any]:
    """For ``Task.apply`` (eager mode): the request fields that the sending options would have
    put in a message, so callbacks, errbacks and the chain run in this process too."""

    def as_list(value: Any) -> list[Any] | None:
        if value is None:
            return None
        return [value] if isinstance(value, Mapping) else list(value)

    return {
        "callbacks": as_list(options.get("link")),
        "errbacks": as_list(options.get("link_error")),
        "chain": options.get("chain"),
        "root_id": options.get("root_id"),
        "parent_id": options.get("parent_id"),
    }


def on_failure(app: App, request: Context, exc: Any, traceback: str | None) -> None:
    """A task failed: its chord gets the failure as its part, the rest of its chain fails with
    it, and its errbacks are called (in Celery's order)."""
    if request.chord:
        _guard(request, "chord part", lambda: _chord_part(app, request, states.FAILURE, exc))
    if request.chain:
        _guard(request, "failing the chain", lambda: fail_chain(app, request.chain, exc, traceback))
    if request.errbacks:
        _guard(request, "link_error", lambda: call_errbacks(app, request, exc, traceback))


def _guard(request: Context, what: str, action: Callable[[], None]) -> None:
    try:
        action()
    except Exception:
        log.exception(
            "task %s[%s]: could not send its %s (root %s)",
            request.task,
            request.id,
            what,
            request.root_id or request.id,
        )


def _publish(what: str, send: Callable[[], Any]) -> None:
    """Sends with a few retries while the broker is unreachable: a follow-up lost here is a
    workflow that silently stops."""
    delay = PUBLISH_DELAY
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            send()
            return
        except errors.BrokerConnectionError as exc:
            if attempt == PUBLISH_ATTEMPTS:
                raise
            log.warning("sending %s: broker unavailable (%s); retrying in %.1fs", what, exc, delay)
            time.sleep(delay)
            delay *= 3


def _ids(request: Context) -> dict[str, Any]:
    """What a follow-up's message says about where it came from."""
    return {"parent_id": request.id, "root_id": request.root_id or request.id}


# -- success -------------------------------------------------------------------------------------
def _send_callbacks(app: App, request: Context, value: Any) -> None:
    callbacks = [signature(c, app=app) for c in request.callbacks or ()]
    if len(callbacks) == 1:
        _publish("a callback", _sender(callbacks[0], value, request))
        return
    # Several callbacks go out as one group, and each group callback on its own (Celery's way).
    tasks = [c for c in callbacks if not isinstance(c, group)]
    for callback in callbacks:
        if isinstance(callback, group):
            _publish("a group callback", _sender(callback, value, request))
    if tasks:
        _publish("callbacks", _sender(group(tasks, app=app), value, request))


def _sender(sig: Signature, value: Any, request: Context) -> Callable[[], Any]:
    return lambda: sig.apply_async((value,), **_ids(request))


def _send_next(app: App, request: Context, value: Any) -> None:
    steps = list(request.chain or ())
    step = signature(steps.pop(), app=app)  # the chain is reversed: the next step is last
    _publish(
        f"chain step {step.task}[{step.id}]",
        lambda: step.apply_async((value,), chain=steps or None, **_ids(request)),
    )


# -- chords --------------------------------------------------------------------------------------
def _chord_part(app: App, request: Context, state: str, value: Any) -> None:
    """Returns this task's part; sends the body if it was the last part and this worker won the
    right to (the backend decides atomically, so exactly one worker does)."""
    group_id, task_id = request.group, request.id
    if not group_id or not task_id:
        log.error("task %s[%s] is in a chord but has no group id; ignored", request.task, task_id)
        return
    backend = app.backend
    try:
        join = backend.chord_part_return(group_id, task_id, request.group_index, state, value)
    except errors.EncodeError as exc:  # the result cannot travel: the part fails instead
        join = backend.chord_part_return(
            group_id, task_id, request.group_index, states.FAILURE, exc
        )
    if join is None:
        return
    body = signature(request.chord, app=app)
    try:
        try:
            results = join.values()
        except errors.ChordError as exc:
            log.error("chord %s failed: %s; its body %s will not run", group_id, exc, body.task)
            chord_error(app, body, exc)
            return
        try:
            _publish(
                f"chord body {body.task}[{body.id}]",
                lambda: body.apply_async((results,), **_ids(request)),
            )
        except Exception as exc:
            log.exception("chord %s: could not send its body %s", group_id, body.task)
            chord_error(app, body, errors.ChordError(f"Callback error: {exc!r}"))
    finally:
        backend.chord_done(join)


def chord_error(app: App, body: Signature, exc: BaseException) -> None:
    """The body of a chord will not run: it fails with ``exc`` as if it had run and raised it
    (FAILURE stored, its errbacks called, its chain and any chord it is part of told)."""
    if isinstance(body, group):
        for task in body._members():
            for errback in body.options.get("link_error") or ():
                task.link_error(errback)
            chord_error(app, task, exc)
        return
    body.options.setdefault("task_id", str(uuid.uuid4()))
    request = signature_request(body)
    app.backend.store_result(body.options["task_id"], exc, states.FAILURE, None, request)
    on_failure(app, request, exc, None)


def signature_request(sig: Signature) -> Context:
    """The request a frozen signature's task would have run with: what storing its result or
    failing it in its place needs (its chord, chain and errbacks included)."""
    options = sig.options
    return Context(
        id=options.get("task_id"),
        task=sig.task,
        args=sig.args,
        kwargs=sig.kwargs,
        root_id=options.get("root_id"),
        parent_id=options.get("parent_id"),
        group=options.get("group_id"),
        group_index=options.get("group_index"),
        chord=options.get("chord"),
        chain=options.get("chain"),
        errbacks=options.get("link_error"),
        delivery_info={},
    )


# -- failure -------------------------------------------------------------------------------------
def fail_chain(app: App, chain: list[Any] | None, exc: Any, traceback: str | None) -> None:
    """Marks the steps of a chain that will not run as FAILURE with the error that stopped it;
    a step that was a chord part returns the failure to its chord, so the chord ends too."""
    backend = app.backend
    pending = deque(signature(s, app=app) for s in chain or ())
    while pending:
        step = pending.popleft()
        if isinstance(step, group):
            pending.extend(step._members())
            continue
        if isinstance(step, chord):
            pending.append(step.body)  # its result is its body's
            continue
        request = signature_request(step)
        if request.id is None:
            continue
        failed_before = request.chord and backend.get_meta(request.id)["status"] in (
            states.PROPAGATE_STATES
        )
        backend.store_result(request.id, exc, states.FAILURE, traceback, request)
        if request.chord and not failed_before:  # its part was returned already
            _chord_part(app, request, states.FAILURE, exc)


def call_errbacks(app: App, request: Context, exc: Any, traceback: str | None) -> None:
    """Celery 5's rule: an errback whose task this worker has, that is not bound and takes more
    than one argument, is called here as ``errback(request, exc, traceback)``; every other one
    is sent as a task with the failed task's id as its first argument (as a group)."""
    by_id: list[Signature] = []
    for errback in (signature(e, app=app) for e in request.errbacks or ()):
        task = app.tasks.get(errback.task)
        if task is not None and _takes_request(task, errback):
            try:
                errback(request, exc, traceback)
            except Exception:
                log.exception("errback %s of task %s raised", errback.task, request.id)
        else:
            by_id.append(errback)
    if by_id:
        errbacks = group(by_id, app=app)
        _publish("errbacks", lambda: errbacks.apply_async((request.id,), **_ids(request)))


def _takes_request(task: Task, errback: Signature) -> bool:
    """Whether the errback's function takes more than one positional argument beyond those the
    signature already holds (Celery's ``arity_greater(..., 1)``)."""
    if task.bind:  # Celery sends bound errbacks as tasks
        return False
    try:
        parameters = list(inspect.signature(task.run).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return True
    positional = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if not errback.immutable:
        positional = [p for p in positional[len(errback.args) :] if p.name not in errback.kwargs]
    return len(positional) > 1
