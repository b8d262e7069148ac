"""Canvas: signatures, and the workflows built from them (``chain``, ``group``, ``chord``).

Everything here has Celery's wire form, so a workflow started on either side of a mixed fleet is
finished by whichever workers run its steps. A signature is a dict
``{"task", "args", "kwargs", "options", "subtask_type", "immutable"}``; a chain travels as the
``chain`` field of its first task's message (the remaining steps, reversed: the worker pops the
last), a chord's body as the ``chord`` field of every header task. ``execution/followups.py`` is the
worker side; ``maps.py`` adds ``xmap``, ``xstarmap`` and ``chunks``, and ``Task.replace`` swaps a
running task for a signature.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from copy import deepcopy
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, overload

from fastq import stamping
from fastq._state import get_current_app
from fastq._typing import R
from fastq.result import AsyncResult, EagerResult, GroupResult, ResultNode
from fastq.stamping import StampingVisitor as StampingVisitor  # Celery's home for it

if TYPE_CHECKING:
    from fastq.app import App
    from fastq.task import Task

log = logging.getLogger("fastq.canvas")
T = TypeVar("T")

#: Options a merge may not replace once set (Celery's ``_IMMUTABLE_OPTIONS``): a task counted by
#: a chord must stay in that chord's group.
_IMMUTABLE_OPTIONS = frozenset({"group_id", "stamped_headers"})

#: Options Celery puts in signatures that only mean something to Celery's own publisher.
_CELERY_ONLY_OPTIONS = frozenset(
    {
        "add_to_parent",
        "producer",
        "connection",
        "publisher",
        "router",
        "mandatory",
        "immediate",
        "stamps",
        "subtask_type",
    }
)


#: The options ``App.build_message`` takes (its keyword-only parameters; a test keeps them equal):
#: what a signature passes on when it is sent.
SEND_OPTIONS = frozenset(
    {
        "argsrepr",
        "kwargsrepr",
        "task_id",
        "countdown",
        "eta",
        "expires",
        "queue",
        "exchange",
        "routing_key",
        "priority",
        "serializer",
        "headers",
        "retries",
        "parent_id",
        "root_id",
        "group_id",
        "group_index",
        "time_limit",
        "soft_time_limit",
        "shadow",
        "ignore_result",
        "link",
        "link_error",
        "chain",
        "chord",
        "reply_to",
        "route_name",
        "replaced_task_nesting",
        "compression",
        "stamped_headers",
        "stamps",
    }
)


#: What ``send_task`` takes besides ``build_message``'s options: how to publish, not what.
PUBLISH_OPTIONS = frozenset({"retry", "retry_policy"})


class _Field(Generic[T]):
    """A key of the signature dict that is also an attribute (``sig.args``), converted when set
    so the dict keeps the types of the wire form."""

    def __init__(self, key: str, convert: Callable[[Any], T]) -> None:
        self.key = key
        self.convert = convert

    @overload
    def __get__(self, obj: None, owner: type) -> _Field[T]: ...
    @overload
    def __get__(self, obj: dict[str, Any], owner: type) -> T: ...
    def __get__(self, obj: dict[str, Any] | None, owner: type) -> _Field[T] | T:
        if obj is None:
            return self
        return obj[self.key]  # type: ignore[no-any-return]

    def __set__(self, obj: dict[str, Any], value: Any) -> None:
        obj[self.key] = self.convert(value)


class Signature(dict, Generic[R]):  # type: ignore[type-arg]
    """A task call that can be passed around, sent later, linked or combined::

    add.s(2, 2)  # Signature("proj.add", (2, 2))
    add.s(2).delay(3)  # partial args go first: add(3, 2)
    add.si(1, 1)  # immutable: ignores a parent's result
    add.s(1, 1).set(countdown=10, queue="low")

    ``Signature[R]``: one task's call, sent as an ``AsyncResult[R]``. The workflows (``chain``,
    ``group``, ``chord``, the maps) are ``Signature[Any]`` and send a ``ResultNode`` (a group's
    is a ``GroupResult``): their overrides are marked ``type: ignore[override]``, as a group is
    not a call whose result is one value.
    """

    #: ``subtask_type`` -> class, so ``signature(dict)`` rebuilds chains, groups and chords.
    TYPES: ClassVar[dict[str, type[Signature]]] = {}

    def __init__(
        self,
        task: str | Task | Mapping[str, Any] | None = None,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        subtask_type: str | None = None,
        immutable: bool = False,
        app: App | None = None,
        **extra_options: Any,
    ) -> None:
        self._app = app
        self._type: Task | None = None
        if isinstance(task, Mapping):  # from the wire, or a copy
            super().__init__(task)
            self.setdefault("args", ())
            self.setdefault("kwargs", {})
            self.setdefault("options", {})
            self.setdefault("subtask_type", None)
            self.setdefault("immutable", False)
            self["args"] = tuple(self["args"] or ())
            self["kwargs"] = dict(self["kwargs"] or {})
            self["options"] = dict(self["options"] or {})
            return
        name = getattr(task, "name", task)
        if not isinstance(task, str) and task is not None:
            self._type = task  # type: ignore[assignment]
            self._app = app or getattr(task, "app", None)
        super().__init__(
            task=name,
            args=tuple(args or ()),
            kwargs=dict(kwargs or {}),
            options={**(options or {}), **extra_options},
            subtask_type=subtask_type,
            immutable=immutable,
        )

    @classmethod
    def register_type(cls, target: type[Signature]) -> type[Signature]:
        cls.TYPES[str(target.__name__)] = target
        return target

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], app: App | None = None) -> Signature:
        """The signature a dict describes, as the class its ``subtask_type`` names."""
        kind = d.get("subtask_type")
        if kind:
            target = cls.TYPES.get(str(kind))
            if target is None:
                raise ValueError(f"unknown signature type {kind!r} for task {d.get('task')!r}")
            if target is not cls:
                return target.from_dict(d, app)
        return Signature(d, app=app)

    # -- fields (the dict's keys, also read and set as attributes) --------------------------------
    task: _Field[str] = _Field("task", str)
    name = task
    args: _Field[tuple[Any, ...]] = _Field("args", tuple)
    kwargs: _Field[dict[str, Any]] = _Field("kwargs", dict)
    options: _Field[dict[str, Any]] = _Field("options", dict)
    subtask_type: _Field[str | None] = _Field("subtask_type", lambda v: v)
    immutable: _Field[bool] = _Field("immutable", bool)

    @property
    def id(self) -> str | None:
        """The task id, once frozen or set with ``.set(task_id=...)``."""
        return self.options.get("task_id")

    @property
    def app(self) -> App:
        if self._app is not None:
            return self._app
        return get_current_app()

    @property
    def type(self) -> Task | None:
        """The registered task, or ``None`` when this process does not have it."""
        if self._type is not None:
            return self._type
        return self.app.tasks.get(self.task)

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task}({', '.join(parts)}){'!' if self.immutable else ''}"

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        # A plain dict: copying must not drag the app along (it owns connections). Arguments are
        # shared, as Celery shares them; options are copied because preparing a workflow edits
        # them.
        copy = dict(self)
        memo[id(self)] = copy
        copy["options"] = deepcopy(self.options, memo)
        return copy

    # -- building --------------------------------------------------------------------------------
    def _merge(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
        """Partial args go before the stored ones; partial kwargs and options override, except
        for the immutable options; an immutable signature keeps its args and kwargs."""
        merged = dict(self.options)
        for key, value in (options or {}).items():
            if key not in _IMMUTABLE_OPTIONS or key not in merged:
                merged[key] = value
        if self.immutable:
            return self.args, dict(self.kwargs), merged
        return (*tuple(args or ()), *self.args), {**self.kwargs, **(kwargs or {})}, merged

    def _call_args(
        self, args: Iterable[Any] | None, options: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """For a workflow being sent or run: its partial args before its own (unless it is
        immutable), and its options overridden by those given (``None`` means not given)."""
        merged = {**self.options, **{k: v for k, v in options.items() if v is not None}}
        return self._merge(args)[0], merged

    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature[R]:
        """A copy, with partial args/kwargs/options merged in as ``apply_async`` would."""
        args, kwargs, merged = self._merge(args, kwargs, options)
        copy = Signature.from_dict(
            {
                **self,
                "args": args,
                "kwargs": kwargs,
                "options": deepcopy(merged),
                "subtask_type": self.subtask_type,
                "immutable": self.immutable,
            },
            app=self._app,
        )
        copy._type = self._type
        return copy

    partial = clone

    def set(self, immutable: bool | None = None, **options: Any) -> Signature[R]:
        """Sets sending options (``countdown``, ``queue``, ``task_id``...); returns ``self``."""
        if immutable is not None:
            self.immutable = immutable
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self.immutable = immutable

    def stamp(
        self, visitor: StampingVisitor | None = None, append_stamps: bool = False, **headers: Any
    ) -> Signature[R]:
        """Celery's stamping: ``headers`` (and what ``visitor.on_signature`` adds) become stamps
        of this signature and of its link callbacks and errbacks; with ``append_stamps`` a stamp
        given again becomes a list of its values. A workflow stamps every task in it."""
        stamping.stamp_links(self, visitor, append_stamps, headers)
        extra = visitor.on_signature(self, **headers) or {} if visitor else None
        self.options.update(stamping.collect(self, extra, append_stamps, headers))
        return self

    def _stamp_flow(
        self, kind: str, visitor: StampingVisitor | None, append: bool, headers: dict[str, Any]
    ) -> None:
        """A chain's or group's ``stamp``: the visitor's ``on_<kind>_start`` stamps, then the
        links and every task, then ``on_<kind>_end``."""
        start = getattr(visitor, f"on_{kind}_start", None)
        extra = start(self, **headers) or {} if start else None
        headers = stamping.collect(self, extra, append, headers)
        stamping.stamp_links(self, visitor, append, headers)
        self._stamp_members("tasks", visitor, append, headers)
        if visitor is not None:
            getattr(visitor, f"on_{kind}_end")(self, **headers)

    def _stamp_members(
        self, key: str, visitor: StampingVisitor | None, append: bool, headers: dict[str, Any]
    ) -> None:
        """Stamps each signature of ``self.kwargs[key]`` (a chain's or group's tasks)."""
        members = [maybe_signature(t, app=self._app) for t in self.kwargs[key]]
        for member in members:
            member.stamp(visitor, append, **headers)
        self.kwargs[key] = members

    def _append_option(self, key: str, value: Any) -> Any:
        items = self.options.get(key)
        if items is None:
            items = self.options[key] = []
        elif not isinstance(items, list):
            items = self.options[key] = list(items) if isinstance(items, tuple) else [items]
        if value not in items:
            items.append(value)
        return value

    def link(self, callback: Mapping[str, Any]) -> Any:
        """Runs ``callback`` with this task's result when it succeeds; returns ``callback``."""
        return self._append_option("link", callback)

    def link_error(self, errback: Mapping[str, Any]) -> Any:
        """Runs ``errback`` when this task fails; returns ``errback``. The errback gets the failed
        task's id as its first argument, or ``(request, exc, traceback)`` when its function takes
        more than one argument and the worker that runs the task has it (Celery's rule)."""
        return self._append_option("link_error", errback)

    def on_error(self, errback: Mapping[str, Any]) -> Signature[R]:
        """``link_error`` that returns ``self``, for ``add.s(1).on_error(log.s()).delay()``."""
        self.link_error(errback)
        return self

    def __or__(self, other: Any) -> Signature:
        if isinstance(other, chain):
            return chain(self, *other.tasks, app=self._app)
        if isinstance(other, Signature):
            return chain(self, other, app=self._app)
        return NotImplemented

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Mapping[str, Any] | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> ResultNode:
        """Fixes the task id (and the group, chord, ids given) before sending; returns the
        result the send will produce."""
        options = self.options
        task_id = options.setdefault("task_id", _id or str(uuid.uuid4()))
        if root_id:
            options["root_id"] = root_id
        if parent_id:
            options["parent_id"] = parent_id
        options.setdefault("reply_to", self.app.oid)
        if group_id:
            options.setdefault("group_id", group_id)
        if chord is not None:
            options["chord"] = chord
        if group_index is not None:
            options["group_index"] = group_index
        return AsyncResult(task_id, app=self.app)

    # -- sending ---------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the task here, in this process."""
        task = self.type
        if task is None:
            from fastq.errors import NotRegistered

            raise NotRegistered(f"task {self.task!r} is not registered in this process")
        args, kwargs, _ = self._merge(args, kwargs)
        return task(*args, **kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[R]:
        return self.apply_async(args, kwargs)

    def __invert__(self) -> Any:
        """``~sig``: sends it and waits for its result (Celery's shorthand, for the shell)."""
        return self.apply_async().get()

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """Sends the task; ``args`` go before the stored ones, ``options`` override."""
        options = {k: v for k, v in options.items() if v is not None}
        args, kwargs, options = self._merge(args, kwargs, options)
        return send(self.app, self.task, args, kwargs, options, self.type)

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> EagerResult[R]:
        """Runs the task here and now (eager), with its callbacks; returns an ``EagerResult``."""
        options = {k: v for k, v in options.items() if v is not None}
        args, kwargs, options = self._merge(args, kwargs, options)
        task = self.type
        if task is None:
            from fastq.errors import NotRegistered

            raise NotRegistered(f"task {self.task!r} is not registered in this process")
        return task.apply(args, kwargs, **options)


def send(
    app: App,
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
    task: Task | None = None,
) -> AsyncResult:
    """Sends one task with signature options, through the registered task when there is one
    (so its defaults such as ``queue`` apply, as in Celery)."""
    options = dict(options)
    send_options = stamping.sending_options(options)
    for key, value in options.items():
        if value is None or key in _CELERY_ONLY_OPTIONS:
            continue
        if key in SEND_OPTIONS or key in PUBLISH_OPTIONS:
            send_options[key] = value
        else:
            log.debug("task %s: ignoring the unknown signature option %r", name, key)
    if task is not None:
        return task.apply_async(args, kwargs, **send_options)
    return app.send_task(name, args, kwargs, **send_options)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [value]
    return list(value)


def _tasks_argument(tasks: tuple[Any, ...]) -> list[Any]:
    """``chain(a, b)`` and ``chain([a, b])`` (or a generator) both work, as in Celery."""
    if len(tasks) == 1 and not isinstance(tasks[0], Mapping):
        return list(tasks[0])
    return list(tasks)


def maybe_signature(value: Any, app: App | None = None) -> Signature:
    """A signature for a signature or its dict form (a signature is returned as is)."""
    if isinstance(value, Signature):
        if app is not None and value._app is None:
            value._app = app
        return value
    if isinstance(value, Mapping):
        return Signature.from_dict(value, app=app)
    raise TypeError(f"expected a signature or its dict, got {type(value).__name__}: {value!r:.100}")


def signature(
    value: Any,
    args: Iterable[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    app: App | None = None,
    **extra: Any,
) -> Signature:
    """``signature("proj.add", (1, 2))`` by name, or rebuilds one from its dict (a message's
    ``callbacks``, ``chain``, ``chord``...) as a ``Signature``, ``chain``, ``group`` or ``chord``.
    A signature is cloned."""
    if isinstance(value, Signature):
        return value.clone()
    if isinstance(value, Mapping):
        return Signature.from_dict(value, app=app)
    return Signature(value, args, kwargs, options, app=app, **extra)


@Signature.register_type
class chain(Signature):  # Celery's lower-case name
    """Tasks run one after another, each getting the previous one's result as its first
    argument (unless immutable)::

    res = chain(add.s(1, 2), add.s(10), mul.s(2)).apply_async()  # ((1 + 2) + 10) * 2
    res = (add.s(1, 2) | add.s(10)).delay()  # the same with |
    res.get()  # the last task's result; res.parent is the one before

    The first task carries the rest in its message, so any worker (fastq or Celery) sends the
    next step; no process has to stay up to drive the chain.
    """

    def __init__(self, *tasks: Any, app: App | None = None, **options: Any) -> None:
        steps = [maybe_signature(t, app) for t in _tasks_argument(tasks)]
        app = app or next((s._app for s in steps if s._app is not None), None)
        super().__init__(
            "celery.chain", (), {"tasks": steps}, options, subtask_type="chain", app=app
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], app: App | None = None) -> Signature:
        kwargs = d.get("kwargs") or {}
        steps = [maybe_signature(t, app) for t in kwargs.get("tasks") or ()]
        if d.get("args") and steps:  # partial args of a chain go to its first task
            steps[0] = steps[0].clone(d["args"])
        return chain(*steps, app=app, **dict(d.get("options") or {}))

    @property
    def tasks(self) -> list[Signature]:
        return self.kwargs["tasks"]  # type: ignore[no-any-return]

    def stamp(  # type: ignore[override]
        self, visitor: StampingVisitor | None = None, append_stamps: bool = False, **headers: Any
    ) -> None:
        self._stamp_flow("chain", visitor, append_stamps, headers)

    def __or__(self, other: Any) -> Signature:
        if isinstance(other, chain):
            return chain(*self.tasks, *other.tasks, app=self._app)
        if isinstance(other, Signature):
            return chain(*self.tasks, other, app=self._app)
        return NotImplemented

    def __call__(self, *args: Any, **kwargs: Any) -> ResultNode:
        return self.apply_async(args, kwargs)

    if TYPE_CHECKING:  # Signature.delay, sending this chain: its last step's result

        def delay(self, *args: Any, **kwargs: Any) -> ResultNode: ...  # type: ignore[override]

    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        copy = chain(*(t.clone() for t in self.tasks), app=self._app, **deepcopy(self.options))
        copy.options.update(options)
        if args and copy.tasks:
            copy.tasks[0] = copy.tasks[0].clone(args, kwargs)
        return copy

    def _unchained(self) -> list[Signature]:
        """Copies of the steps with this chain's ``link`` on the last one and its ``link_error``
        on every one: what a chain inside another chain keeps of its options (Celery's
        ``unchain_tasks``)."""
        steps = [maybe_signature(t, self._app).clone() for t in self.tasks]
        for callback in _as_list(self.options.get("link")) if steps else ():
            steps[-1].link(callback)
        for errback in _as_list(self.options.get("link_error")):
            for step in steps:
                step.link_error(errback)
        return steps

    def _steps(self) -> list[Signature]:
        """The steps to send: copies, nested chains spliced in, and a group followed by another
        step turned into a chord with that step as body (Celery does the same)."""
        flat: list[Signature] = []

        def splice(steps: Iterable[Signature]) -> None:
            for step in steps:
                step = maybe_signature(step, self._app)
                if isinstance(step, chain):
                    splice(step._unchained())
                elif isinstance(step, group) and not step.tasks:
                    continue
                else:
                    flat.append(step.clone())

        splice(self.tasks)
        steps: list[Signature] = []
        for step in reversed(flat):
            if isinstance(step, group) and steps:
                step = chord(step, steps.pop(), app=self._app)
            steps.append(step)
        steps.reverse()
        return steps

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Mapping[str, Any] | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> ResultNode:
        steps = self._steps()
        self.kwargs["tasks"] = steps
        return _freeze_steps(steps, _id, group_id, chord, group_index, root_id)

    def apply_async(  # type: ignore[override]
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ResultNode:
        """Sends the first task with the rest of the chain in its message; returns the result
        of the last task (its ``parent`` is the one of the task before, and so on)."""
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        args, options = self._call_args(args, options)
        steps = self._steps()
        if not steps:
            raise ValueError("cannot send an empty chain")
        # The chain's result is its last task's: that task takes the chain's id and, in a
        # group or chord header, the group's place.
        last_id = options.pop("task_id", None)
        group_id = options.pop("group_id", None)
        group_index = options.pop("group_index", None)
        chord_body = options.pop("chord", None)
        for callback in _as_list(options.pop("link", None)):
            steps[-1].link(callback)
        for errback in _as_list(options.pop("link_error", None)):
            for step in steps:  # a failure anywhere in the chain calls it
                step.link_error(errback)
        root_id = options.get("root_id")
        result = _freeze_steps(steps, last_id, group_id, chord_body, group_index, root_id)
        first, rest = steps[0], steps[1:]
        remaining = [*(options.pop("chain", None) or ()), *reversed(rest)]
        first.apply_async(args, kwargs, chain=remaining or None, **options)
        return result

    def apply(  # type: ignore[override]
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ResultNode:
        """Runs the steps here, one after another; a failing step raises (as in Celery)."""
        args, options = self._call_args(args, options)
        options.pop("task_id", None)
        previous: ResultNode | None = None
        for step in self._steps():
            if previous is None:
                result = step.apply(args, kwargs, **options)
            else:
                result = step.apply((previous.get(),), **options)
            result.parent = previous
            previous = result
        if previous is None:
            raise ValueError("cannot run an empty chain")
        return previous


def _freeze_steps(
    steps: list[Signature],
    last_id: str | None,
    group_id: str | None,
    chord_body: Mapping[str, Any] | None,
    group_index: int | None,
    root_id: str | None = None,
) -> ResultNode:
    """Gives every step its id (and the workflow's root, as Celery does); each step's result
    gets the previous one as ``parent``."""
    previous: ResultNode | None = None
    result: ResultNode | None = None
    for i, step in enumerate(steps):
        if i == len(steps) - 1:
            result = step.freeze(
                last_id, group_id, chord_body, root_id=root_id, group_index=group_index
            )
        else:
            result = step.freeze(root_id=root_id)
        if previous is not None:
            node = result
            while node.parent is not None:  # a chord's result: its header group is the root
                node = node.parent
            node.parent = previous
        previous = result
    assert result is not None
    return result


@Signature.register_type
class group(Signature):  # Celery's lower-case name
    """Tasks run in parallel; the result is a ``GroupResult``::

    res = group(add.s(i, i) for i in range(10)).apply_async()
    res.get(timeout=10)  # [0, 2, 4, ...], in order
    """

    def __init__(self, *tasks: Any, app: App | None = None, **options: Any) -> None:
        members = [maybe_signature(t, app) for t in _tasks_argument(tasks)]
        app = app or next((s._app for s in members if s._app is not None), None)
        super().__init__(
            "celery.group", (), {"tasks": members}, options, subtask_type="group", app=app
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], app: App | None = None) -> Signature:
        kwargs = d.get("kwargs") or {}
        members = [maybe_signature(t, app) for t in kwargs.get("tasks") or ()]
        copy = group(*members, app=app, **dict(d.get("options") or {}))
        copy.args = d.get("args") or ()
        copy.immutable = bool(d.get("immutable"))
        return copy

    @property
    def tasks(self) -> list[Signature]:
        return self.kwargs["tasks"]  # type: ignore[no-any-return]

    def stamp(  # type: ignore[override]
        self, visitor: StampingVisitor | None = None, append_stamps: bool = False, **headers: Any
    ) -> None:
        self._stamp_flow("group", visitor, append_stamps, headers)

    def __len__(self) -> int:  # the number of tasks, as in Celery (not the dict's size)
        return len(self.tasks)

    def __or__(self, other: Any) -> Signature:
        if isinstance(other, Signature) and not isinstance(other, (group, chain)):
            return chord(self, other, app=self._app)
        return super().__or__(other)

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)

    if TYPE_CHECKING:  # Signature.delay, sending this group

        def delay(self, *args: Any, **kwargs: Any) -> GroupResult: ...  # type: ignore[override]

    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        copy = group(*(t.clone() for t in self.tasks), app=self._app, **deepcopy(self.options))
        copy.options.update(options)
        copy.args = self._merge(args)[0]
        copy.immutable = self.immutable
        return copy

    def skew(self, start: float = 1.0, stop: float | None = None, step: float = 1.0) -> group:
        """Spreads the tasks out in time: the first gets ``countdown=start``, each next one
        ``step`` seconds more, up to ``stop`` (then ``stop`` for the rest), as Celery's."""
        countdown = start
        for task in self.tasks:
            task.set(countdown=countdown)
            if stop is None or countdown + step <= stop:
                countdown += step
        return self

    def _members(self) -> list[Signature]:
        """The tasks, nested groups flattened (their options dropped, as Celery does)."""
        members: list[Signature] = []
        for task in self.tasks:
            task = maybe_signature(task, self._app)
            if isinstance(task, group):
                members.extend(task._members())
            else:
                members.append(task)
        return members

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Mapping[str, Any] | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> ResultNode:
        gid = self.options.setdefault("task_id", str(uuid.uuid4()))
        if group_id:
            self.options["group_id"] = group_id
        members = self._members()
        self.kwargs["tasks"] = members
        # The members get this group's id when it is sent; ``group_id`` here is the group this
        # one is in, as in Celery.
        results = [
            task.freeze(
                group_id=group_id, chord=chord, root_id=root_id, parent_id=parent_id, group_index=i
            )
            for i, task in enumerate(members)
        ]
        return GroupResult(gid, results, app=self.app)

    # Only a worker sends a group with ``chain`` (the steps after it): that makes it a chord,
    # whose result is the body's.
    @overload  # type: ignore[override]
    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        chain: None = None,
        **options: Any,
    ) -> GroupResult: ...
    @overload
    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        chain: Sequence[Any],
        **options: Any,
    ) -> ResultNode: ...
    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ResultNode:
        """Sends every task with the group's id and its index; returns a ``GroupResult``."""
        if options.get("link") or options.get("link_error"):
            raise TypeError("a group cannot have link/link_error: use a chord, or link the tasks")
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        args, options = self._call_args(args, options)
        gid = options.pop("task_id", None) or str(uuid.uuid4())
        rest = options.pop("chain", None)
        if rest:
            # A worker finishing the step before this group, in a chain built without chords
            # (Celery upgrades group | task to a chord, so only an odd client gets here): the
            # group is then the header of a chord whose body is the next step.
            body = maybe_signature(rest[-1], self._app).clone(chain=list(rest[:-1]) or None)
            header = group(*self.tasks, app=self._app, task_id=gid)
            return chord(header, body, app=self._app).apply_async(args, kwargs, **options)
        options.pop("group_index", None)
        options.pop("group_id", None)
        chord_body = options.pop("chord", None)
        members = self._members()
        if chord_body is not None:
            # Before any header task is sent, or the last one could finish first and find no size.
            self.app.backend.set_chord_size(gid, sum(_chord_size(m) for m in members))
        with self.app.publish_batch():
            results = [
                task.apply_async(
                    args, kwargs, group_id=gid, group_index=i, chord=chord_body, **options
                )
                for i, task in enumerate(members)
            ]
        result = GroupResult(gid, results, app=self.app)
        self.app.add_child(result)
        return result

    def apply(  # type: ignore[override]
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> GroupResult:
        """Runs every task here, in order; returns a ``GroupResult`` of ``EagerResult``."""
        args, options = self._call_args(args, options)
        gid = options.pop("task_id", None) or str(uuid.uuid4())
        results = [task.apply(args, kwargs, **options) for task in self._members()]
        return GroupResult(gid, results, app=self.app)


def _chord_size(sig: Signature) -> int:
    """How many parts a header member returns to its chord (Celery's ``_descend``)."""
    if isinstance(sig, group):
        return sum(_chord_size(t) for t in sig._members())
    if isinstance(sig, chain):
        for step in reversed(sig.tasks):  # its last task carries the chord
            size = _chord_size(maybe_signature(step, sig._app))
            if size:
                return size
        return 0
    if isinstance(sig, chord):
        return _chord_size(sig.body)
    return 1


@Signature.register_type
class chord(Signature):  # Celery's lower-case name
    """A group whose results, in order, go to one more task once all of them succeeded::

    res = chord([add.s(1, 1), add.s(2, 2)])(tsum.s())  # tsum([2, 4])
    res.get()  # 6; res.parent is the header's GroupResult

    The worker that finishes the last header task sends the body; the Redis result backend
    decides which one atomically. If a header task fails, the body is not run: it gets a
    ``ChordError`` and its ``link_error`` callbacks are called.
    """

    def __init__(
        self,
        header: Any,
        body: Mapping[str, Any] | None = None,
        app: App | None = None,
        **options: Any,
    ) -> None:
        if isinstance(header, Mapping):
            header_value: Any = maybe_signature(header, app)
            members = [header_value]
        else:
            header_value = members = [maybe_signature(t, app) for t in header]
        body_sig = maybe_signature(body, app) if body is not None else None
        if body_sig is not None:
            members = [*members, body_sig]
        app = app or next((s._app for s in members if s._app is not None), None)
        super().__init__(
            "celery.chord",
            (),
            {"kwargs": {}, "header": header_value, "body": body_sig},
            options,
            subtask_type="chord",
            app=app,
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], app: App | None = None) -> Signature:
        kwargs = dict(d.get("kwargs") or {})
        copy = chord(kwargs.pop("header", ()), kwargs.pop("body", None), app=app)
        copy.options.update(d.get("options") or {})
        copy.args = d.get("args") or ()
        copy.immutable = bool(d.get("immutable"))
        copy.kwargs["kwargs"] = dict(kwargs.get("kwargs") or {})
        return copy

    @property
    def body(self) -> Signature:
        body = self.kwargs["body"]
        if body is None:
            raise ValueError("this chord has no body: chord(header)(body) or chord(header, body)")
        return body  # type: ignore[no-any-return]

    @body.setter
    def body(self, value: Mapping[str, Any]) -> None:
        body = self.kwargs["body"] = maybe_signature(value, self._app)
        self._app = self._app or body._app

    @property
    def tasks(self) -> list[Signature]:
        header = self.kwargs["header"]
        return header.tasks if isinstance(header, group) else header  # type: ignore[no-any-return]

    def stamp(  # type: ignore[override]
        self, visitor: StampingVisitor | None = None, append_stamps: bool = False, **headers: Any
    ) -> None:
        extra = visitor.on_chord_header_start(self, **headers) or {} if visitor else None
        headers = stamping.collect(self, extra, append_stamps, headers)
        stamping.stamp_links(self, visitor, append_stamps, headers)
        header = self.kwargs["header"]
        if isinstance(header, group):
            header._stamp_members("tasks", visitor, append_stamps, headers)
        else:
            self._stamp_members("header", visitor, append_stamps, headers)
        if visitor is not None:
            visitor.on_chord_header_end(self, **headers)
        if visitor is not None and self.kwargs.get("body") is not None:
            # As Celery: the body is stamped through a visitor only.
            extra = visitor.on_chord_body(self, **headers) or {}
            body_headers = stamping.collect(self, extra, append_stamps, headers)
            self.body.stamp(visitor, append_stamps, **body_headers)

    def _header(self) -> group:
        header = self.kwargs["header"]
        if isinstance(header, group):
            return header
        return group(*header, app=self._app)

    def __call__(self, body: Mapping[str, Any] | None = None, **options: Any) -> ResultNode:
        """``chord(header)(body)``: sets the body and sends the chord."""
        if body is not None:
            self.body = body
        return self.apply_async((), **options)

    if TYPE_CHECKING:  # Signature.delay, sending this chord: its body's result

        def delay(self, *args: Any, **kwargs: Any) -> ResultNode: ...  # type: ignore[override]

    def __or__(self, other: Any) -> Signature:
        if isinstance(other, Signature) and not isinstance(other, (group, chain)):
            copy = self.clone()
            assert isinstance(copy, chord)
            copy.body = copy.body | other
            return copy
        return super().__or__(other)

    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        header = self._header().clone()
        body = self.kwargs["body"]
        copy = chord(
            header,
            body.clone() if body is not None else None,
            app=self._app,
            **deepcopy(self.options),
        )
        copy.options.update(options)
        copy.args = self._merge(args)[0]
        copy.immutable = self.immutable
        return copy

    def link(self, callback: Mapping[str, Any]) -> Any:
        return self.body.link(callback)

    def link_error(self, errback: Mapping[str, Any]) -> Any:
        return self.body.link_error(errback)

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Mapping[str, Any] | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> ResultNode:
        header = self._header()
        self.kwargs["header"] = header
        # The header tasks get the body when the chord is sent, not in their frozen options: it
        # would travel twice in every message of a chain holding this chord.
        header_result = header.freeze(parent_id=parent_id, root_id=root_id)
        self.options["task_id"] = header.options["task_id"]
        body_result = self.body.freeze(
            _id, root_id=root_id, chord=chord, group_id=group_id, group_index=group_index
        )
        node = body_result
        while node.parent is not None:
            node = node.parent
        node.parent = header_result
        return body_result

    def apply_async(  # type: ignore[override]
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ResultNode:
        """Sets the chord's size in the backend, then sends the header tasks, each carrying the
        body; returns the body's result (``parent``: the header's ``GroupResult``)."""
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        args, options = self._call_args(args, options)
        body = self.body.clone()
        header = self._header().clone()
        assert isinstance(header, group)
        task_id = options.pop("task_id", None)
        for callback in _as_list(options.pop("link", None)):
            body.link(callback)
        for errback in _as_list(options.pop("link_error", None)):
            body.link_error(errback)
        # What the chord was sent with is for its body (the rest of a chain, the group it is a
        # member of, ...), except its parent: the header task that sends the body is that.
        body.options.update({k: v for k, v in options.items() if k != "parent_id"})
        group_id = header.options.get("task_id") or str(uuid.uuid4())
        body_result = body.freeze(task_id, group_id=group_id, root_id=options.get("root_id"))
        header_options = {
            k: v
            for k, v in options.items()
            if k not in ("chain", "chord", "group_id", "group_index")
        }
        if header.tasks:
            header_result = header.apply_async(
                args, dict(kwargs or {}), task_id=group_id, chord=body, **header_options
            )
        else:  # nothing will return a part: the body runs now, on no results
            body.apply_async(([],))
            header_result = GroupResult(group_id, [], app=self.app)
        body_result.parent = header_result
        return body_result

    def apply(  # type: ignore[override]
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ResultNode:
        """Runs the header here, then the body on its results (a failure raises)."""
        header = self._header().apply(args, kwargs)
        result = self.body.apply((header.get(),), **options)
        result.parent = header
        return result
