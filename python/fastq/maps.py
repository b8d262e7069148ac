"""Map signatures: ``task.map(it)`` (``xmap``), ``task.starmap(it)`` (``xstarmap``) and
``task.chunks(it, n)`` (``chunks``), with Celery's wire forms.

Each is a call of one of Celery's built-in tasks (``celery.map``, ``celery.starmap``,
``celery.chunks``; ``fastq.builtin_tasks`` registers them in every app), so a map sent by
either side runs on the other's workers. On the wire they are plain signatures of those tasks
(``subtask_type`` null, immutable) with the mapped task's signature in their kwargs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from fastq import canvas
from fastq.canvas import Signature, maybe_signature, send
from fastq.result import AsyncResult, ResultNode

if TYPE_CHECKING:
    from fastq.app import App


class _BuiltinCall(Signature):
    """A call of a built-in task over a task's signature: immutable, its fields in its kwargs."""

    _task_name: ClassVar[str]
    _fields: ClassVar[tuple[str, ...]]

    def __init__(
        self, task: Mapping[str, Any], *fields: Any, app: App | None = None, **options: Any
    ) -> None:
        inner = maybe_signature(task, app)
        values = dict(zip(self._fields[1:], fields, strict=True))
        super().__init__(
            self._task_name,
            (),
            {"task": inner, **values, "it": list(values["it"])},
            options,
            immutable=True,
            app=app or inner._app,
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], app: App | None = None) -> Signature:
        kwargs = d["kwargs"]
        options = dict(d.get("options") or {})
        return cls(*(kwargs[name] for name in cls._fields), app=app, **options)

    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        return type(self).from_dict(super().clone(args, kwargs, **options), app=self._app)

    def _send_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Its options, those given over them, and routed as the mapped task would be (Celery's
        ``route_name``). A parent's result is not passed on: the signature is immutable."""
        merged = {**self.options, **{k: v for k, v in options.items() if v is not None}}
        merged.setdefault("route_name", self.kwargs["task"].task)
        return merged


class _basemap(_BuiltinCall):
    """One message that runs ``task`` over every item of ``it`` in the worker that gets it, in
    order (in parallel is ``group`` or ``chunks``). Celery's built-in task ``celery.map`` or
    ``celery.starmap`` does it; its wire form is a plain signature of that task, immutable,
    with kwargs ``{"task": <the task's signature>, "it": [...]}``."""

    _fields = ("task", "it")
    _star: ClassVar[str]

    def __repr__(self) -> str:
        return f"[{self.kwargs['task'].task}({self._star}x) for x in {self.kwargs['it']!r:.100}]"

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Sends the one message."""
        return send(self.app, self.task, (), self.kwargs, self._send_options(options), self.type)


@Signature.register_type
class xmap(_basemap):  # Celery's name
    """``task.map(it)``: ``[task(x) for x in it]`` in one worker; the result is the list."""

    _task_name = "celery.map"
    _star = ""


@Signature.register_type
class xstarmap(_basemap):  # Celery's name
    """``task.starmap(it)``: ``[task(*x) for x in it]`` in one worker; the result is the list."""

    _task_name = "celery.starmap"
    _star = "*"


@Signature.register_type
class chunks(_BuiltinCall):  # Celery's lower-case name
    """``task.chunks(it, n)``: the calls ``task(*x) for x in it`` in a group of ``xstarmap``
    messages of ``n`` calls each; the result is a ``GroupResult`` whose results are lists::

    res = add.chunks([(i, i) for i in range(100)], 10).apply_async()
    res.get()  # [[0, 2, ..., 18], [20, ...], ...]: 10 lists of 10

    Its wire form is a plain signature of Celery's built-in task ``celery.chunks`` (immutable,
    kwargs ``{"task", "it", "n"}``), which sends the group from the worker that gets it.
    """

    _task_name = "celery.chunks"
    _fields = ("task", "it", "n")

    def __init__(
        self,
        task: Mapping[str, Any],
        it: Iterable[Any],
        n: int,
        app: App | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"chunks: n must be a positive int, got {n!r}")
        super().__init__(task, it, n, app=app, **options)

    def __call__(self, **options: Any) -> ResultNode:  # type: ignore[override]
        return self.apply_async(**options)

    if TYPE_CHECKING:  # Signature.delay, sending the group

        def delay(self, *args: Any, **kwargs: Any) -> ResultNode: ...  # type: ignore[override]

    def group(self) -> canvas.group:
        """The group of ``xstarmap`` signatures, one per ``n`` items."""
        task, it, n = self.kwargs["task"], self.kwargs["it"], self.kwargs["n"]
        parts = (xstarmap(task, it[i : i + n], app=self._app) for i in range(0, len(it), n))
        return canvas.group(parts, app=self._app)

    def apply_async(  # type: ignore[override]
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ResultNode:
        """Sends the group; returns its ``GroupResult``."""
        return self.group().apply_async(**self._send_options(options))

    def apply(  # type: ignore[override]
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ResultNode:
        return self.group().apply(**options)
