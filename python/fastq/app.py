"""``App``: configuration, the task registry and ``send_task``."""

from __future__ import annotations

import gc
import os
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta, tzinfo
from functools import cached_property
from types import FunctionType, MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, overload

from fastq import builtin_tasks, protocol, publish_retry, pydantic_models, stamping
from fastq._core import compression_type
from fastq._state import add_app, set_current_app
from fastq._state import current_app as current_app  # its old home: ``from fastq.app import ...``
from fastq.backends import Backend, backend_from_url
from fastq.brokers import Broker, broker_from_url
from fastq.config import (
    DEFAULT_BROKER_URL,
    Config,
    app_timezone,
    default_result_backend,
    resolve_annotations,
)
from fastq.control import Control
from fastq.errors import ConfigurationError, NotRegistered
from fastq.result import AsyncResult
from fastq.routing import Router
from fastq.signals import Signal
from fastq.task import Context, Task
from fastq.tracing import Tracing

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Concatenate, Protocol

    from fastq._typing import P, R
    from fastq.canvas import Signature
    from fastq.loader import Packages

    # What ``@app.task(...)`` returns: a decorator generic in the function it gets. An
    # ``async def`` function's R is the value its coroutine returns (first overload).
    class TaskDecorator(Protocol):
        @overload
        def __call__(
            self, fun: Callable[P, Coroutine[Any, Any, R]]
        ) -> Task[P, R, Coroutine[Any, Any, R]]: ...
        @overload
        def __call__(self, fun: Callable[P, R]) -> Task[P, R]: ...

    # ``@app.task(bind=True)``: the first parameter (the task itself) is not one of P.
    class BoundTaskDecorator(Protocol):
        @overload
        def __call__(
            self, fun: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]
        ) -> Task[P, R, Coroutine[Any, Any, R]]: ...
        @overload
        def __call__(self, fun: Callable[Concatenate[Any, P], R]) -> Task[P, R]: ...


class _SendDefaults(NamedTuple):
    """The settings every outgoing message reads (``App._send_defaults``)."""

    tz: tzinfo
    ignore_result: bool
    compression: str | None
    serializer: str
    delivery_mode: int
    priority: Callable[[], int | None]


class App:
    """A fastq application::

    app = App("proj", broker="redis://127.0.0.1:6379/0", backend="redis://127.0.0.1:6379/1")

    @app.task
    def add(x, y):
        return x + y
    """

    def __init__(
        self,
        main: str | None = None,
        *,
        broker: str | None = None,
        backend: str | None = None,
        include: Iterable[str] = (),
        config_source: object | str | None = None,
        namespace: str | None = None,
        set_as_current: bool = True,
        task_cls: type[Task] | str = Task,
        **settings: Any,
    ) -> None:
        self.main = main
        self._task_cls = task_cls
        self.namespace = namespace
        self.conf = Config()
        self.conf.on_change(self._setting_changed)
        if config_source is not None:
            self.conf.from_object(config_source, namespace)
        self.conf.update(settings)
        if broker is not None:
            self.conf.broker_url = broker
        if backend is not None:
            self.conf.result_backend = backend
        if include:
            self.conf.include = [*self.conf.include, *include]
        self.tasks: dict[str, Task] = {}
        self._autodiscover: list[tuple[Packages, str | None]] = []
        #: The current request (a stack) and the open ``publish_batch``: per thread and per
        #: asyncio task, as the asyncio pool runs many tasks on one thread.
        self._requests: ContextVar[tuple[Context, ...]] = ContextVar("fastq.app.requests")
        self._batch: ContextVar[list[protocol.OutgoingMessage] | None] = ContextVar(
            "fastq.app.batch"
        )
        self._tracing: Tracing | None = None
        self._sent_with: tuple[Config, int, _SendDefaults] | None = None
        #: Celery's app signals: sent once, by ``finalize()`` (when beat or a worker starts), so
        #: receivers may use tasks defined after them (``add_periodic_task`` in the guide).
        self.on_after_configure = Signal("app.on_after_configure", ("source",))
        self.on_after_finalize = Signal("app.on_after_finalize")
        self.finalized = False
        builtin_tasks.register(self)
        add_app(self)  # the @shared_task tasks
        if set_as_current:
            set_current_app(self)
        os.register_at_fork(after_in_child=self._after_fork)

    def __repr__(self) -> str:
        return f"<App {self.main or '__main__'}>"

    # -- configuration ---------------------------------------------------------------------------
    def config_from_object(
        self,
        obj: object | str,
        silent: bool = False,
        force: bool = False,
        namespace: str | None = None,
    ) -> None:
        """Reads settings from an object or module (``"proj.celeryconfig"``), Celery-style:
        with ``namespace="CELERY"``, Django's way (``CELERY_BROKER_URL``). ``silent``: a module
        that cannot be imported is no error. ``force`` is Celery's (fastq reads at once)."""
        self.namespace = namespace or self.namespace
        try:
            self.conf.from_object(obj, self.namespace)
        except ImportError:
            if not silent:
                raise
        self._reset_connections()

    def config_from_envvar(self, variable_name: str, silent: bool = False) -> None:
        """``config_from_object`` of the module named by the environment variable."""
        module = os.environ.get(variable_name)
        if not module:
            if silent:
                return
            raise ConfigurationError(
                f"environment variable {variable_name!r} is not set: it should name the "
                "configuration module"
            )
        self.config_from_object(module, silent=silent)

    def _setting_changed(self, name: str) -> None:
        if name == "task_annotations":
            for task in self.tasks.values():
                self._annotate(task)

    def _annotate(self, task: Task) -> None:
        """Applies ``task_annotations`` to ``task``, as Celery does: they set its attributes
        (over the decorator's options); a function is set on the task's class (a method), and
        ``'@name'`` wraps the method ``name`` with what it maps to."""
        for attributes in resolve_annotations(self.conf.task_annotations, task):
            for key, value in attributes.items():
                name = key.lstrip("@")
                if key.startswith("@"):
                    original = getattr(type(task), name)
                    original = getattr(original, "__wrapped__", None) or original
                    value = value(original)
                    value.__wrapped__ = original
                if isinstance(value, FunctionType):
                    setattr(_own_class(task), name, value)
                else:
                    setattr(task, name, value)

    def _reset_connections(self) -> None:
        for name in ("broker", "backend", "router"):
            self.__dict__.pop(name, None)

    def _after_fork(self) -> None:
        # Connections and their locks belong to the parent; a child opens its own. So is the
        # client id: it names the rpc:// reply queue, which a child sharing it would drain of
        # the parent's replies (and delete when it closes).
        self._reset_connections()
        self.__dict__.pop("oid", None)

    @property
    def broker_url(self) -> str:
        """The broker this app uses: ``broker_url``, else the embedded default."""
        return str(self.conf.broker_url or DEFAULT_BROKER_URL)

    @property
    def result_backend_url(self) -> str | None:
        """The result backend this app uses: ``result_backend``, else the broker's default
        (``None``: results are not stored)."""
        return self.conf.result_backend or default_result_backend(self.broker_url)

    @property
    def timezone(self) -> tzinfo:
        """The app's time zone (``timezone``, ``enable_utc``): ETAs of countdowns and
        ``date_done`` are in it, as in Celery."""
        return app_timezone(self.conf)

    @cached_property
    def broker(self) -> Broker:
        return broker_from_url(self.broker_url, self.conf)

    @cached_property
    def backend(self) -> Backend:
        return backend_from_url(self.result_backend_url, self.conf, self.oid)

    @cached_property
    def control(self) -> Control:
        """Remote control of the live workers: ``app.control.inspect().active()``."""
        return Control(self)

    @cached_property
    def router(self) -> Router:
        return Router(self.conf)

    @cached_property
    def oid(self) -> str:
        """This client's id: the ``reply_to`` of the tasks it sends."""
        return str(uuid.uuid4())

    def close(self) -> None:
        events = self.__dict__.pop("_events", None)
        if events is not None:
            events.close()
        for name in ("broker", "backend"):
            obj = self.__dict__.pop(name, None)
            if obj is not None:
                obj.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tasks -----------------------------------------------------------------------------------
    @overload
    def task(
        self, fun: Callable[P, Coroutine[Any, Any, R]]
    ) -> Task[P, R, Coroutine[Any, Any, R]]: ...
    @overload
    def task(self, fun: Callable[P, R]) -> Task[P, R]: ...
    @overload
    def task(
        self, fun: None = None, *, bind: Literal[True], **options: Any
    ) -> BoundTaskDecorator: ...
    @overload
    def task(
        self, fun: None = None, *, bind: Literal[False] = False, **options: Any
    ) -> TaskDecorator: ...
    @overload  # ``bind`` not known statically: the first parameter may or may not be P's
    def task(
        self, fun: None = None, *, bind: bool, **options: Any
    ) -> Callable[[Callable[..., Any]], Task[..., Any]]: ...
    def task(self, fun: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Registers a function as a task: ``@app.task`` or ``@app.task(name=..., bind=True)``."""
        unknown = set(options) - Task.OPTIONS
        if unknown:
            raise ConfigurationError(
                f"unknown task option(s) {sorted(unknown)}; known: {sorted(Task.OPTIONS)}"
            )

        def register(f: Callable[..., Any]) -> Task:
            base: type[Task] = options.pop("base", None) or self.task_cls
            name = options.pop("name", None) or self.gen_task_name(f)
            models = {k[len("pydantic_") :]: options.pop(k) for k in _PYDANTIC if k in options}
            if options.pop("pydantic", False):
                f = pydantic_models.wrap(self, f, name, **models)
            task = base(self, f, name, **options)
            self.tasks[name] = task
            self._annotate(task)
            return task

        return register(fun) if fun is not None else register

    def register_task(self, task: Task | type[Task], **options: Any) -> Task:
        """Adds a class-based task (an instance, or its class) to this app, Celery's way::

        class Resize(Task):
            name = "images.resize"
            def run(self, path, size): ...

        resize = app.register_task(Resize())
        """
        if isinstance(task, type):
            task = task(self, **options)
        else:
            task.app = self
            for key, value in options.items():
                setattr(task, key, value)
        self.tasks[task.name] = task
        return task

    @cached_property
    def task_cls(self) -> type[Task]:
        """The base class of this app's tasks: ``App(task_cls=...)`` (a class or
        ``"module:Class"``), else ``fastq.Task``."""
        cls: Any = self._task_cls
        if isinstance(cls, str):
            import importlib

            module, sep, attr = cls.partition(":")
            if not sep:
                module, _, attr = cls.rpartition(".")
            cls = getattr(importlib.import_module(module), attr)
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise ConfigurationError(f"task_cls must be a fastq Task subclass, got {cls!r}")
        return cls

    def gen_task_name(self, fun: Callable[..., Any]) -> str:
        module = getattr(fun, "__module__", None) or "__main__"
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{fun.__qualname__}"

    def get_task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            raise NotRegistered(
                f"task {name!r} is not registered; known tasks: {builtin_tasks.user_tasks(self)}"
            ) from None

    def import_modules(self) -> None:
        """Imports ``imports``/``include`` so their tasks register, then the task modules of
        ``autodiscover_tasks()``."""
        import importlib

        from fastq.loader import discover

        for module in [*self.conf.imports, *self.conf.include]:
            importlib.import_module(module)
        for packages, related_name in self._autodiscover:
            discover(packages, related_name)

    def autodiscover_tasks(
        self, packages: Packages = None, related_name: str | None = "tasks", force: bool = False
    ) -> None:
        """Imports ``<package>.tasks`` of each package (Celery's ``autodiscover_tasks``): when
        the worker starts, or now with ``force``. ``packages``: names, a callable returning
        them, or None for Django's installed apps."""
        from fastq.loader import discover

        if force:
            discover(packages, related_name)
        else:
            self._autodiscover.append((packages, related_name))

    # -- periodic tasks (fastq beat) -------------------------------------------------------------
    def finalize(self) -> None:
        """Sends ``on_after_configure`` then ``on_after_finalize``, once (Celery sends them when
        the configuration is first read and when the task registry is complete)."""
        if self.finalized:
            return
        self.finalized = True
        self.on_after_configure.send(sender=self, source=self.conf)
        self.on_after_finalize.send(sender=self)

    def add_periodic_task(
        self,
        schedule: Any,
        sig: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        **opts: Any,
    ) -> str:
        """Adds an entry to ``beat_schedule``, as Celery's ``add_periodic_task``: ``schedule``
        is seconds, a ``timedelta`` or a ``crontab``; ``sig`` a signature (``task.s(...)``)
        whose args/kwargs/options the entry takes, ``args``/``kwargs`` merged in as a partial
        call; ``opts`` are send options. The key is ``name``, else ``repr(sig)``; returns it."""
        from fastq.canvas import Signature

        if not isinstance(sig, Signature):
            sig = Signature(getattr(sig, "name", sig), app=self)
        sig = sig.clone(args, kwargs or {})
        key = name or repr(sig)
        if name is None and key in self.conf.beat_schedule:
            import logging

            logging.getLogger("fastq.beat").warning(
                "periodic task %r replaces an earlier unnamed one: pass name= to keep both", key
            )
        self.conf.beat_schedule[key] = {
            "schedule": schedule,
            "task": sig.task,
            "args": tuple(sig.args),
            "kwargs": dict(sig.kwargs),
            "options": {**sig.options, **opts},
        }
        return key

    # -- the command line ------------------------------------------------------------------------
    def start(self, argv: Sequence[str] | None = None) -> int:
        """Runs the ``fastq`` command line with this app (Celery's ``app.start()``): in
        ``proj.py``, ``if __name__ == "__main__": app.start()`` makes ``python proj.py worker``
        work. ``argv`` defaults to the script's arguments; returns the exit code."""
        from fastq.cli import main

        args = list(sys.argv[1:] if argv is None else argv)
        if args and args[0] == sys.argv[0]:  # Celery's form passes sys.argv whole
            args = args[1:]
        return main(args, app=self)

    def worker_main(self, argv: Sequence[str] | None = None) -> int:
        """``start`` for the worker command only (Celery's ``app.worker_main``)."""
        args = list(sys.argv[1:] if argv is None else argv)
        if "worker" not in args:
            raise ValueError(
                "worker_main needs the worker command in argv, e.g. ['worker', '-l', 'INFO']; "
                "use app.start() for other commands"
            )
        return self.start(args)

    # -- the current request (set by the worker while a task runs) -------------------------------
    def current_request(self) -> Context | None:
        stack = self._requests.get(())
        return stack[-1] if stack else None

    def push_request(self, request: Context) -> None:
        self._requests.set((*self._requests.get(()), request))

    def pop_request(self) -> None:
        self._requests.set(self._requests.get()[:-1])

    def add_child(self, result: Any) -> None:
        """A task running here sent ``result``'s task: it is stored among its ``children``, as
        Celery does. Not the members of a group being sent: the group counts as one."""
        request = self.current_request()
        if request is None or self._batch.get(None) is not None:
            return
        task = self.tasks.get(request.task or "")
        if task is None or task.trail:  # ``trail=False``: the task keeps no children
            request.add_child(result)

    # -- sending ---------------------------------------------------------------------------------
    @property
    def tracing(self) -> Tracing | None:
        """OpenTelemetry spans of publishes and task runs (``task_tracing``), or None when off."""
        if not self.conf.task_tracing:
            return None
        if self._tracing is None:
            self._tracing = Tracing()
        return self._tracing

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Sends a task by name (it need not be registered here); returns its ``AsyncResult``.
        ``retry``/``retry_policy``: Celery's publish retry (``task_publish_retry``,
        ``task_publish_retry_policy`` by default)."""
        retry, policy = options.pop("retry", None), options.pop("retry_policy", None)
        if "stamps" not in options:  # Celery's form: stamped_headers=[names], name=value...
            options.update(stamping.sending_options(options))
        message = self.build_message(name, args, kwargs, **options)
        if not message.headers.get("ignore_result"):
            self.backend.on_task_sent(message.id)
        tracing = self.tracing
        span = (
            None
            if tracing is None
            else tracing.publishing(message.headers, name, message.id, message.queue)
        )
        batch = self._batch.get(None)
        try:
            if batch is not None:
                batch.append(message)
            else:
                self._publish(lambda: self.broker.publish(message), name, retry, policy)
                if self.conf.task_send_sent_event:
                    self._sent_events([message])
        except BaseException as exc:
            if span is not None:
                tracing.end_publish(span, exc)  # type: ignore[union-attr]
            raise
        if span is not None:
            tracing.end_publish(span)  # type: ignore[union-attr]
        result = AsyncResult(message.id, app=self)
        result.ignored = bool(message.headers.get("ignore_result"))
        self.add_child(result)
        return result

    @contextmanager
    def publish_batch(self) -> Iterator[None]:
        """Tasks sent in this block (by this thread) are published together when it ends, in
        one pipelined round trip: how a group's tasks go out. Nothing is sent if it raises."""
        if self._batch.get(None) is not None:
            yield  # nested: the outermost block publishes
            return
        batch: list[protocol.OutgoingMessage] = []
        token = self._batch.set(batch)
        try:
            yield
        finally:
            self._batch.reset(token)
        if batch:
            self._publish(lambda: self.broker.publish_many(batch), f"{len(batch)} tasks")
            if self.conf.task_send_sent_event:
                self._sent_events(batch)

    def _publish(
        self,
        send: Callable[[], None],
        what: str,
        retry: bool | None = None,
        policy: Mapping[str, Any] | None = None,
    ) -> None:
        """One publish under Celery's publish retry: the call's ``retry``/``retry_policy``
        over ``task_publish_retry``/``task_publish_retry_policy``."""
        conf = self.conf
        if policy is not None:
            publish_retry.RetryPolicy.of(policy)  # a bad key is refused now, not at an outage
        publish_retry.publish(
            send,
            retry=conf.task_publish_retry if retry is None else bool(retry),
            policy=lambda: publish_retry.RetryPolicy.of(conf.task_publish_retry_policy, policy),
            what=what,
        )

    def send_many(
        self,
        calls: Iterable[tuple[str, Sequence[Any] | None, Mapping[str, Any] | None]],
        **options: Any,
    ) -> list[AsyncResult]:
        """Sends many tasks in one pipelined round trip: ``[(name, args, kwargs), ...]``."""
        # Every message and result of a batch lives until the batch is sent and returned: the
        # cyclic collector's passes over them find nothing to free, and were a sixth of the CPU.
        collecting = gc.isenabled()
        if collecting:
            gc.disable()
        try:
            return self._send_many(calls, options)
        finally:
            if collecting:
                gc.enable()

    def _send_many(
        self,
        calls: Iterable[tuple[str, Sequence[Any] | None, Mapping[str, Any] | None]],
        options: dict[str, Any],
    ) -> list[AsyncResult]:
        retry, policy = options.pop("retry", None), options.pop("retry_policy", None)
        if options or not self.router.by_name_only or self.tracing is not None:
            messages = [self.build_message(n, a, k, **options) for n, a, k in calls]
        else:
            messages = self._plain_messages(calls)
        # Before publishing, as send_task does: rpc:// loses replies sent before its queue exists.
        self.backend.on_tasks_sent([m.id for m in messages if not m.headers.get("ignore_result")])
        what = f"{len(messages)} tasks"
        tracing = self.tracing
        if tracing is None:
            self._publish(lambda: self.broker.publish_many(messages), what, retry, policy)
        else:
            spans = [
                tracing.publishing(m.headers, m.headers["task"], m.id, m.queue) for m in messages
            ]
            self._publish(lambda: self.broker.publish_many(messages), what, retry, policy)
            for span in spans:
                tracing.end_publish(span)
        if self.conf.task_send_sent_event:
            self._sent_events(messages)
        results = [AsyncResult(m.id, app=self) for m in messages]
        for message, result in zip(messages, results, strict=True):
            result.ignored = bool(message.headers.get("ignore_result"))
        return results

    def _plain_messages(
        self, calls: Iterable[tuple[str, Sequence[Any] | None, Mapping[str, Any] | None]]
    ) -> list[protocol.OutgoingMessage]:
        """``build_message(name, args, kwargs)`` for each call, when nothing but its arguments
        differs between two calls of one task (no send options, routes by name only): one
        message is built per task name and the others are copies with their own id and
        arguments, at about half the cost per message (``send_many``'s batches)."""
        made: dict[str, protocol.OutgoingMessage] = {}
        messages = []
        for name, args, kwargs in calls:
            first = made.get(name)
            if first is None:
                first = made[name] = self.build_message(name, args, kwargs)
                messages.append(first)
                continue
            args = tuple(args) if args is not None else ()
            if not isinstance(args, tuple):
                raise TypeError("task args must be a list or tuple")
            kwargs = dict(kwargs) if kwargs is not None else {}
            task_id = protocol.new_task_id()
            headers = first.headers.copy()
            headers["id"] = headers["root_id"] = task_id
            headers["timelimit"] = list(headers["timelimit"])
            headers["argsrepr"] = protocol.short_repr(args)
            headers["kwargsrepr"] = protocol.short_repr(kwargs)
            headers["stamps"] = {}
            messages.append(
                protocol.OutgoingMessage(
                    headers,
                    args,
                    kwargs,
                    dict(first.embed) if first.embed is not None else None,
                    first.queue,
                    first.exchange,
                    first.routing_key,
                    first.priority,
                    first.serializer,
                    first.reply_to,
                    first.delivery_mode,
                    dict(first.properties),
                )
            )
        return messages

    def _sent_events(self, messages: Sequence[protocol.OutgoingMessage]) -> None:
        """``task-sent`` events (``task_send_sent_event``), as a Celery client sends them."""
        from fastq.events import client_dispatcher, sent_event

        dispatcher = client_dispatcher(self)
        if dispatcher is not None:
            dispatcher.send_many([("task-sent", sent_event(m)) for m in messages])

    def build_message(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        task_id: str | None = None,
        countdown: float | None = None,
        eta: datetime | str | None = None,
        expires: float | timedelta | datetime | str | None = None,
        queue: str | None = None,
        exchange: str | None = None,
        routing_key: str | None = None,
        priority: int | None = None,
        serializer: str | None = None,
        headers: Mapping[str, Any] | None = None,
        retries: int = 0,
        parent_id: str | None = None,
        root_id: str | None = None,
        group_id: str | None = None,
        group_index: int | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        shadow: str | None = None,
        ignore_result: bool | None = None,
        link: Any = None,
        link_error: Any = None,
        chain: Any = None,
        chord: Any = None,
        reply_to: str | None = None,
        route_name: str | None = None,
        replaced_task_nesting: int = 0,
        argsrepr: str | None = None,
        kwargsrepr: str | None = None,
        compression: str | None = None,
        stamped_headers: Sequence[str] | None = None,
        stamps: Mapping[str, Any] | None = None,
        **unknown: Any,
    ) -> protocol.OutgoingMessage:
        if unknown:
            raise ConfigurationError(f"unknown send option(s): {sorted(unknown)}")
        args = tuple(args) if args is not None else ()
        if not isinstance(args, tuple):
            raise TypeError("task args must be a list or tuple")
        kwargs = dict(kwargs) if kwargs is not None else {}
        task_id = task_id or protocol.new_task_id()
        defaults = self._send_defaults()
        destination = (
            _NO_DESTINATION
            if queue is None and exchange is None and routing_key is None
            else {"queue": queue, "exchange": exchange, "routing_key": routing_key}
        )
        route = self.router.route(
            route_name or name, destination, args, kwargs, task=self.tasks.get(name)
        )
        if route.options:  # what the matching task_routes entry sets, unless this call did
            given = route.options
            priority = priority if priority is not None else given.get("priority")
            serializer = serializer or given.get("serializer")
            expires = expires if expires is not None else given.get("expires")
            time_limit = time_limit if time_limit is not None else given.get("time_limit")
            if soft_time_limit is None:
                soft_time_limit = given.get("soft_time_limit")
        tz = defaults.tz
        eta_text = (
            protocol.seconds_from_now(countdown, tz)
            if countdown is not None
            else protocol.to_iso(eta)
        )
        properties: dict[str, Any] = {}
        expires_text: str | None = None
        if expires is not None:  # most messages have none: skip the checks
            if isinstance(expires, timedelta):
                expires = expires.total_seconds()
            if isinstance(expires, (int, float)):
                properties["expiration"] = str(int(expires * 1000))
                expires_text = protocol.seconds_from_now(expires, tz)
            else:
                expires_text = protocol.to_iso(expires)
        if ignore_result is None and defaults.ignore_result:
            ignore_result = True
        # Otherwise None, as Celery's send_task sends it: the worker then asks the task.
        message_headers = protocol.task_headers(
            name,
            task_id,
            args,
            kwargs,
            eta=eta_text,
            expires=expires_text,
            retries=retries,
            group=group_id,
            group_index=group_index,
            root_id=root_id,
            parent_id=parent_id,
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
            shadow=shadow,
            ignore_result=ignore_result,
            replaced_task_nesting=replaced_task_nesting,
            argsrepr=argsrepr,
            kwargsrepr=kwargsrepr,
        )
        if headers:
            message_headers.update(headers)
        if stamped_headers:
            message_headers["stamped_headers"] = list(stamped_headers)
            message_headers["stamps"] = dict(stamps or {})
        compression = compression or defaults.compression
        if compression:  # kombu's header: the encoders compress the body by it
            message_headers["compression"] = compression_type(compression)
        embed = {
            "callbacks": None if link is None else _as_list(link),
            "errbacks": None if link_error is None else _as_list(link_error),
            "chain": chain,
            "chord": chord,
        }
        return protocol.OutgoingMessage(
            headers=message_headers,
            args=args,
            kwargs=kwargs,
            embed=embed,
            queue=route.queue,
            exchange=route.exchange,
            routing_key=route.routing_key,
            priority=priority if priority is not None else defaults.priority(),
            serializer=serializer or defaults.serializer,
            reply_to=reply_to or self.oid,
            delivery_mode=defaults.delivery_mode,
            properties=properties,
        )

    def _send_defaults(self) -> _SendDefaults:
        """What every message takes from the settings, read again only after one changed
        (a ``.delay()`` in a loop would read six of them each time)."""
        conf = self.conf
        cached = self._sent_with
        if cached is not None and cached[0] is conf and cached[1] == conf.version:
            return cached[2]
        priority: Callable[[], int | None]
        if conf.task_inherit_parent_priority:
            priority = self._default_priority
        else:
            fixed = conf.task_default_priority
            priority = lambda: fixed  # noqa: E731
        defaults = _SendDefaults(
            tz=self.timezone,
            ignore_result=bool(conf.task_ignore_result),
            compression=conf.task_compression,
            serializer=conf.task_serializer,
            delivery_mode=conf.task_default_delivery_mode,
            priority=priority,
        )
        self._sent_with = (conf, conf.version, defaults)
        return defaults

    def _default_priority(self) -> int | None:
        """``task_default_priority``, or with ``task_inherit_parent_priority`` the priority of
        the task running here (the one sending), as in Celery."""
        if self.conf.task_inherit_parent_priority:
            request = self.current_request()
            parent = (request.delivery_info or {}).get("priority") if request else None
            if parent is not None:
                return int(parent)
        return self.conf.task_default_priority

    def AsyncResult(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, app=self)

    def signature(
        self,
        name: str | Mapping[str, Any],
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """A signature of the task ``name`` (need not be registered here), or one rebuilt from
        its dict form, bound to this app (Celery's ``app.signature``)."""
        from fastq.canvas import Signature

        if isinstance(name, Mapping):
            return Signature.from_dict(name, app=self)
        return Signature(name, args, kwargs, app=self, **options)


#: ``@app.task(pydantic=True, ...)``'s settings, as Celery names them.
_PYDANTIC = ("pydantic_strict", "pydantic_context", "pydantic_dump_kwargs")


def _own_class(task: Task) -> type[Task]:
    """A class of ``task``'s own (a subclass of its class), for the methods annotations set."""
    cls = type(task)
    if not cls.__dict__.get("_annotated"):
        cls = type(cls.__name__, (cls,), {"_annotated": True, "__module__": cls.__module__})
        task.__class__ = cls
    return cls


#: The destination of a call that names none (``route`` only reads it).
_NO_DESTINATION: Mapping[str, Any] = MappingProxyType(
    {"queue": None, "exchange": None, "routing_key": None}
)


def _as_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [dict(v) for v in value]
    return [dict(value)]
