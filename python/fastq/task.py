"""``Task``: a registered function with Celery's calling API (``delay``, ``apply_async``)."""

from __future__ import annotations

import inspect
import logging
import traceback as tb
import types
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic

from fastq import states
from fastq._state import pop_task, push_task
from fastq._typing import P, R, RCall
from fastq.errors import BrokerConnectionError, Ignore, MaxRetriesExceededError, Reject, Retry

if TYPE_CHECKING:
    from fastq import maps
    from fastq.app import App
    from fastq.canvas import Signature
    from fastq.result import AsyncResult, EagerResult

log = logging.getLogger("fastq.task")


class Context:
    """The request a task is running for: ``self.request`` inside a bound task."""

    id: str | None = None
    task: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    retries: int = 0
    eta: str | None = None
    expires: str | None = None
    group: str | None = None
    group_index: int | None = None
    root_id: str | None = None
    parent_id: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    hostname: str | None = None
    delivery_info: dict[str, Any] | None = None
    headers: dict[str, Any] | None = None
    is_eager: bool = False
    called_directly: bool = True
    timelimit: tuple[float | None, float | None] = (None, None)
    callbacks: list[Any] | None = None
    errbacks: list[Any] | None = None
    chain: list[Any] | None = None
    chord: Any = None
    ignore_result: bool = False
    replaced_task_nesting: int = 0
    #: Celery's stamping: the names of the stamps and their values (the message's headers).
    stamped_headers: list[str] | None = None
    stamps: dict[str, Any] | None = None
    #: What this run sent (``AsyncResult``s), stored with its result as Celery's ``children``.
    children: list[Any] | None = None

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def add_child(self, result: Any) -> None:
        if self.children is None:
            self.children = []
        self.children.append(result)

    def __repr__(self) -> str:
        return f"<Context {self.task} id={self.id}>"


_DIRECT = Context()


def result_ignored(app: App, task: Task | None, request: Context) -> bool:
    """Whether the result of ``request`` is ignored: as its message says when it says (its
    sender waits by it), else as the task says, else the app (Celery 5.7's rule)."""
    said = request.headers.get("ignore_result") if request.headers else None
    if said is not None:
        return bool(said)
    own = task.ignore_result if task is not None else None
    return bool(request.ignore_result or (app.conf.task_ignore_result if own is None else own))


class ExceptionInfo:
    """What a task raised, as its ``on_failure``/``on_retry`` handlers get it (``einfo``): the
    attributes of Celery's ``ExceptionInfo`` (``type``, ``exception``, ``tb``, ``traceback``
    text, ``exc_info``); ``str(einfo)`` is the traceback."""

    def __init__(self, exception: BaseException, internal: bool = False) -> None:
        self.type = type(exception)
        self.exception = exception
        self.tb = exception.__traceback__
        self.traceback = "".join(tb.format_exception(self.type, exception, self.tb))
        self.internal = internal

    @property
    def exc_info(self) -> tuple[type[BaseException], BaseException, Any]:
        return self.type, self.exception, self.tb

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"


#: Task attributes that are the defaults of the ``apply_async`` options of the same name.
_SEND_DEFAULTS = tuple("queue exchange routing_key priority serializer compression shadow".split())


class Task(Generic[P, R, RCall]):
    """A task. Created by ``@app.task``; call it directly, or send it with ``delay``.

    ``Task[P, R]``: P its parameters (without ``self`` when bound), R its result's value. The
    third parameter, R unless the function is ``async def``, is what a direct call returns:
    the coroutine, which only a worker or ``apply`` runs."""

    name: str
    app: App
    run: Callable[..., Any]
    #: Options that can be set with ``@app.task(...)``; others are refused with a clear error.
    OPTIONS = frozenset(
        {
            "name",
            "bind",
            "queue",
            "exchange",
            "routing_key",
            "priority",
            "serializer",
            "compression",
            "acks_late",
            "acks_on_failure_or_timeout",
            "reject_on_worker_lost",
            "ignore_result",
            "store_errors_even_if_ignored",
            "track_started",
            "max_retries",
            "default_retry_delay",
            "rate_limit",
            "time_limit",
            "soft_time_limit",
            "autoretry_for",
            "dont_autoretry_for",
            "retry_kwargs",
            "retry_backoff",
            "retry_backoff_max",
            "retry_jitter",
            "expires",
            "shadow",
            "typing",
            "base",
            "throws",
            "trail",
            "pydantic",
            "pydantic_strict",
            "pydantic_context",
            "pydantic_dump_kwargs",
        }
    )

    bind = False
    queue: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    priority: int | None = None
    serializer: str | None = None
    #: kombu's compression for this task's messages (``zlib``, ``bzip2``, ``lzma``).
    compression: str | None = None
    acks_late: bool | None = None
    acks_on_failure_or_timeout: bool | None = None
    reject_on_worker_lost: bool | None = None
    ignore_result: bool | None = None
    store_errors_even_if_ignored: bool | None = None
    track_started: bool | None = None
    max_retries: int | None = 3
    default_retry_delay: float = 180
    rate_limit: str | float | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: Mapping[str, Any] = {}
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    expires: float | datetime | None = None
    shadow: str | None = None
    throws: tuple[type[BaseException], ...] = ()
    #: Check the arguments of ``delay``/``apply_async`` against the function before sending, and
    #: raise ``TypeError`` for a call it could not take (Celery's default).
    typing: bool = True
    #: Keep the tasks this one sends as its result's ``children`` (Celery's ``trail``).
    trail: bool = True

    #: Celery's names for these, as class attributes (``except self.MaxRetriesExceededError``).
    MaxRetriesExceededError = MaxRetriesExceededError
    OperationalError = BrokerConnectionError

    def __init__(
        self,
        app: App | None = None,
        fun: Callable[..., Any] | None = None,
        name: str | None = None,
        **options: Any,
    ) -> None:
        """``@app.task`` builds a task from a function; a class-based task (a subclass defining
        ``run``, Celery's other form) is built with no arguments and given an app by
        ``app.register_task(MyTask())``."""
        class_based = fun is None
        if fun is None:  # class-based: the subclass's own run() method, bound already
            if getattr(type(self), "run", None) is None:
                raise TypeError(f"{type(self).__name__}: a class-based task defines run(self, ...)")
            fun = self.run
        if app is None:
            from fastq._state import get_current_app

            app = get_current_app()
        self.app = app
        name = name or getattr(type(self), "name", None)
        if not isinstance(name, str):  # unnamed: module.Class, as Celery names it
            name = f"{type(self).__module__}.{type(self).__qualname__}"
        self.name = name
        for key, value in options.items():
            setattr(self, key, value)
        if not class_based:
            # Bound as in Celery: ``self.run(*args)`` in a base class's ``__call__`` passes self.
            self.run = types.MethodType(fun, self) if self.bind else fun
        self.__name__ = getattr(fun, "__name__", name)
        self.__doc__ = getattr(fun, "__doc__", None)
        self.__module__ = getattr(fun, "__module__", None) or __name__
        self.__wrapped__ = fun
        #: The request stack, per thread and per asyncio task (the asyncio pool runs many tasks
        #: on one thread): a context variable, each push a new tuple.
        self._requests: ContextVar[tuple[Context, ...]] = ContextVar(f"fastq.request:{name}")

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.main or 'fastq'}>"

    if not TYPE_CHECKING:
        # ``Task[P, R]`` is ``Task[P, R, R]`` at run time too (typing's TypeVar has no default
        # before 3.13), so annotations evaluated at run time work as the checker reads them.
        def __class_getitem__(cls, params):
            if isinstance(params, tuple) and len(params) == 2:
                params = (*params, params[1])
            return super().__class_getitem__(params)

    # -- the request context -----------------------------------------------------------------
    @property
    def request(self) -> Context:
        stack = self._requests.get(())
        return stack[-1] if stack else _DIRECT

    def push_request(self, request: Context) -> None:
        self._requests.set((*self._requests.get(()), request))
        push_task(self)

    def pop_request(self) -> None:
        self._requests.set(self._requests.get()[:-1])
        pop_task()

    # -- handlers: override them in a base class (``@app.task(base=MyTask)``), as in Celery --------
    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Runs before the task, in the worker (an error here fails the task)."""

    def on_success(
        self, retval: Any, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Runs after the task succeeded and its result was recorded."""

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: ExceptionInfo,
    ) -> None:
        """Runs after the task failed and its failure was recorded."""

    def on_retry(
        self,
        exc: BaseException | None,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: ExceptionInfo,
    ) -> None:
        """Runs when the task is to be retried (``exc``: the reason given to ``retry``)."""

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: ExceptionInfo | None,
    ) -> None:
        """Runs after a task succeeded or failed (not on retry, reject or ignore); ``einfo``
        is None, as in Celery."""

    # -- calling -----------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> RCall:
        return self.run(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Sends the task with these arguments; returns its ``AsyncResult``."""
        return self.apply_async(args, kwargs)

    # ``args`` and ``kwargs`` are not checked against P: Python's type system cannot split a
    # ParamSpec into a tuple type and a dict type (``delay`` is the checked way to send).
    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """Sends the task with options: ``countdown``, ``eta``, ``expires``, ``queue``,
        ``priority``, ``task_id``, ``serializer``, ``ignore_result``, ``headers``…"""
        if self.typing:
            self.check_arguments(args, kwargs)
        dump = getattr(self.run, "dump_arguments", None)  # pydantic=True: send models as data
        if dump is not None and options.get("serializer") != "pickle":
            args, kwargs = dump(args, kwargs, self.bind)
        for key in _SEND_DEFAULTS:
            value = getattr(self, key)
            if value is not None:
                options.setdefault(key, value)
        if self.expires is not None:
            options.setdefault("expires", self.expires)
        if self.time_limit is not None:
            options.setdefault("time_limit", self.time_limit)
        if self.soft_time_limit is not None:
            options.setdefault("soft_time_limit", self.soft_time_limit)
        ignore = self.ignore_result
        options.setdefault(
            "ignore_result", self.app.conf.task_ignore_result if ignore is None else ignore
        )
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        parent = self.app.current_request()
        if parent is not None and parent.id:
            options.setdefault("parent_id", parent.id)
            options.setdefault("root_id", parent.root_id or parent.id)
        return self.app.send_task(self.name, args, kwargs, **options)

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        retries: int = 0,
        throw: bool | None = None,
        **options: Any,
    ) -> EagerResult[R]:
        """Runs the task here and now (eager mode), retries included; returns an
        ``EagerResult``. With ``throw`` (default: ``task_eager_propagates``) failures raise."""
        from fastq.execution.followups import eager_embed, send_followups
        from fastq.execution.tracer import run_task
        from fastq.result import EagerResult

        context = Context(
            id=task_id or str(uuid.uuid4()),
            task=self.name,
            args=tuple(args or ()),
            kwargs=dict(kwargs or {}),
            retries=retries,
            is_eager=True,
            called_directly=False,
            delivery_info={"is_eager": True},
            **eager_embed(options),
        )
        propagate = self.app.conf.task_eager_propagates if throw is None else throw
        while True:
            outcome = run_task(self, context, False, False, eager=True, propagate=propagate)
            if outcome.state != states.RETRY:
                break
            context.retries += 1  # eager retries run at once, as in Celery
        if isinstance(outcome.error, (Reject, Ignore)):  # as Celery's apply(): nothing follows
            state = states.REJECTED if isinstance(outcome.error, Reject) else states.IGNORED
            return EagerResult(context.id or "", outcome.error, state, None, app=self.app)
        send_followups(self.app, context, outcome)  # link, link_error, chain: run here too
        if self.app.conf.task_store_eager_result:
            self._store_eager(context, outcome.state or states.SUCCESS, outcome)
        if propagate and outcome.state == states.FAILURE:
            raise outcome.value
        return EagerResult(
            context.id or "",
            outcome.value,
            outcome.state or states.SUCCESS,
            outcome.traceback,
            app=self.app,
        )

    def _store_eager(self, context: Context, state: str, outcome: Any) -> None:
        """``task_store_eager_result``: the result of an eager run in the backend, as a
        worker would store it (so ``AsyncResult(id)`` finds it), as in Celery."""
        from fastq.execution.tracer import keeps_result

        if state in states.READY_STATES and keeps_result(self.app, self, context, state):
            backend = self.app.backend
            backend.store_result(context.id or "", outcome.value, state, outcome.traceback, context)

    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Re-sends the running task (same id, ``retries`` + 1) and ends this run by raising
        ``Retry``. Past ``max_retries`` it raises ``exc`` (or ``MaxRetriesExceededError``)."""
        request = self.request
        if request.called_directly:
            if exc is not None:
                raise exc
            raise RuntimeError("retry() needs a task run by a worker (or apply/eager)")
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"can't retry {self.name}[{request.id}]: max retries ({limit}) exceeded"
            )
        if eta is None and countdown is None and not request.is_eager:
            countdown = self.default_retry_delay
        signal = Retry(
            f"retry in {countdown}s" if countdown is not None else f"retry at {eta}", exc
        )
        if request.is_eager:  # apply() runs the next attempt itself
            raise signal
        delivery = request.delivery_info or {}
        options.setdefault("queue", delivery.get("routing_key"))
        self.app.send_task(
            self.name,
            request.args if args is None else args,
            request.kwargs if kwargs is None else kwargs,
            task_id=request.id,
            retries=request.retries + 1,
            countdown=countdown,
            eta=eta,
            root_id=request.root_id,
            parent_id=request.id,
            group_id=request.group,
            group_index=request.group_index,
            link=request.callbacks,
            link_error=request.errbacks,
            chain=request.chain,
            chord=request.chord,
            reply_to=request.reply_to,
            ignore_result=result_ignored(self.app, self, request),
            **options,
        )
        if throw:
            raise signal
        return signal

    def replace(self, sig: Mapping[str, Any]) -> Any:
        """Replaces the running task with ``sig`` (a task, chain, group, chord or chunks), as
        Celery's ``Task.replace``: ``return self.replace(add.s(1) | mul.s(2))``.

        The replacement takes this task's id, so whoever waits on it gets the replacement's
        result (a group's is the list of its results), and its callbacks, errbacks, the rest of
        its chain and its place in a chord. In a worker this run then ends: ``Ignore`` is raised,
        and nothing is stored for it. Eagerly (``apply``, ``task_always_eager``) the replacement
        runs here and its result is returned."""
        request = self.request
        if request.called_directly:
            raise RuntimeError("replace() needs a task run by a worker (or apply/eager)")
        replacement = _replacement(self.app, request, sig)
        if request.is_eager:
            return replacement.apply().get()
        log.info("task %s[%s] replaced by %r", self.name, request.id, replacement)
        replacement.apply_async(parent_id=request.id)
        raise Ignore("replaced by a new task")

    def check_arguments(
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None
    ) -> None:
        """Raises ``TypeError`` when the function cannot be called with these arguments (what
        ``typing=True`` checks before a task is sent)."""
        if not kwargs and args is not None and self._arity is not None:
            low, high = self._arity  # positional arguments only: a count is the whole check
            if low <= len(args) <= high:
                return
        signature = self._signature
        if signature is None:
            return
        try:  # run is bound when the task is: its signature has no self
            signature.bind(*(args or ()), **(kwargs or {}))
        except TypeError as exc:
            raise TypeError(f"{self.name}: {exc}") from None

    @cached_property
    def _arity(self) -> tuple[int, float] | None:
        """How many positional arguments a call may pass when it passes no keyword ones, when
        that count alone decides (every parameter positional, no keyword-only one required)."""
        signature = self._signature
        if signature is None:
            return None
        low, high = 0, 0.0
        for p in signature.parameters.values():
            if p.kind is p.VAR_POSITIONAL:
                high = float("inf")
            elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                high += 1
                low += p.default is p.empty
            elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
                return None
        return low, high

    @cached_property
    def _signature(self) -> inspect.Signature | None:
        try:
            return inspect.signature(self.run)
        except (TypeError, ValueError):  # a builtin or C function: nothing to check against
            return None

    def update_state(
        self, task_id: str | None = None, state: str | None = None, meta: Any = None, **_: Any
    ) -> None:
        """Stores a state of the task (this one by default) with its meta, a custom state such
        as ``"PROGRESS"`` included: ``self.update_state(state="PROGRESS", meta={"done": 3})``.
        Clients read it as ``result.state`` and ``result.info``, or follow it with
        ``get(on_message=...)``. Without a result backend nothing is stored, as in Celery."""
        request = self.request
        task_id = task_id or request.id
        if task_id is None:
            raise RuntimeError(
                f"{self.name}.update_state() outside a task run needs task_id= (whose state?)"
            )
        if not state:
            raise ValueError("update_state() needs a state, e.g. state='PROGRESS'")
        self.app.backend.store_result(task_id, meta, state, request=request)

    def AsyncResult(self, task_id: str) -> AsyncResult[R]:
        from fastq.result import AsyncResult

        return AsyncResult(task_id, app=self.app)

    # -- signatures (canvas) -----------------------------------------------------------------
    def signature(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature[R]:
        """This task with arguments and options, to send later or combine (``fastq.canvas``)."""
        from fastq.canvas import Signature

        immutable = bool(options.pop("immutable", False))
        return Signature(self, args, kwargs, options, immutable=immutable, app=self.app)

    # Partial arguments (the rest comes from a parent's result or ``delay``): not checked.
    def s(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """``add.s(2)``: a signature; in a chain or callback the parent's result comes first."""
        return self.signature(args, kwargs)

    # Immutable, so these are all the arguments the task gets: checked against P.
    def si(self, *args: P.args, **kwargs: P.kwargs) -> Signature[R]:
        """``add.si(2, 2)``: an immutable signature, which ignores the parent's result."""
        return self.signature(args, kwargs, immutable=True)

    def map(self, it: Iterable[Any]) -> maps.xmap:
        """``[self(x) for x in it]`` in one message, run by one worker (``fastq.maps``)."""
        from fastq.maps import xmap

        return xmap(self.s(), it, app=self.app)

    def starmap(self, it: Iterable[Any]) -> maps.xstarmap:
        """``[self(*x) for x in it]`` in one message, run by one worker (``fastq.maps``)."""
        from fastq.maps import xstarmap

        return xstarmap(self.s(), it, app=self.app)

    def chunks(self, it: Iterable[Any], n: int) -> maps.chunks:
        """The calls ``self(*x) for x in it``, ``n`` to a message, sent as a group whose
        results are lists (``fastq.maps``)."""
        from fastq.maps import chunks

        return chunks(self.s(), it, n, app=self.app)


def _replacement(app: App, request: Context, sig: Mapping[str, Any]) -> Signature:
    """What ``Task.replace`` sends, by Celery's rules: ``sig`` frozen with the task's id; a
    group (or chunks) becomes a chord whose body (``celery.accumulate``) returns the group's
    results; in a worker it gets the task's callbacks and errbacks, and the rest of its chain
    follows it."""
    from fastq.canvas import Signature, chain, chord, group, maybe_signature
    from fastq.maps import chunks

    new = maybe_signature(sig, app).clone()
    if new.options.get("chord") is not None:
        raise ValueError("a signature replacing a task must not be part of a chord")
    if isinstance(new, chain) and not new.tasks:
        raise ValueError("cannot replace a task with an empty chain")
    if isinstance(new, chunks):
        new = new.group().set(**new.options)
    if isinstance(new, group):
        new = chord(new, Signature("celery.accumulate", kwargs={"index": 0}, app=app), app=app)
    if request.is_eager:  # the task itself returns the result and goes on as usual
        return new
    for callback in request.callbacks or ():
        new.link(callback)
    for errback in request.errbacks or ():
        new.link_error(errback)
    new.freeze(request.id)
    carrier = new
    while isinstance(carrier, (chain, chord)):  # the signature whose result is the workflow's
        carrier = carrier.tasks[-1] if isinstance(carrier, chain) else carrier.body
    if request.reply_to and not isinstance(carrier, group):
        carrier.options["reply_to"] = request.reply_to  # rpc://: the result goes to the caller
    nesting = request.replaced_task_nesting + 1
    # Set even when None, as Celery does: a chord's body then stays out of the header's group.
    new.set(
        chord=request.chord,
        group_id=request.group,
        group_index=request.group_index,
        root_id=request.root_id,
        replaced_task_nesting=nesting,
    )
    rest = [maybe_signature(step, app) for step in reversed(request.chain or ())]
    for step in [*(new.tasks if isinstance(new, chain) else ()), *rest]:
        step.set(replaced_task_nesting=nesting)
    return chain(new, *rest, app=app) if rest else new
