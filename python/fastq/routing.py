"""Where a task goes: ``task_routes`` and per-call options resolved to queue, exchange, key."""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastq.config import Config
from fastq.errors import ConfigurationError, QueueNotFound

#: Send options a ``task_routes`` entry may carry besides where the task goes (Celery merges a
#: route into the call's options); an explicit option of the call wins.
ROUTE_OPTIONS = frozenset({"priority", "serializer", "expires", "time_limit", "soft_time_limit"})


@dataclass(frozen=True, slots=True)
class Route:
    queue: str
    #: ``""`` is the default exchange: the message goes straight to the queue named by the key.
    exchange: str
    routing_key: str
    #: ROUTE_OPTIONS the matching ``task_routes`` entry gave.
    options: Mapping[str, Any] | None = None


RouteSpec = Mapping[str, Any] | str | None
RouterFn = Callable[..., RouteSpec]


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """Where a queue is bound, as Celery completes a ``task_queues`` entry: a queue with no
    exchange is bound to the default exchange (``task_default_exchange``, else the default
    queue's name, of ``task_default_exchange_type``), with no routing key to
    ``task_default_routing_key`` (else the default queue's name)."""

    name: str
    exchange: str
    exchange_type: str
    routing_key: str


def queue_specs(conf: Config) -> dict[str, QueueSpec]:
    """Every queue the settings define, by name: ``task_queues``, else the default queue."""
    exchange = conf.task_default_exchange or conf.task_default_queue
    exchange_type = conf.task_default_exchange_type
    routing_key = conf.task_default_routing_key or conf.task_default_queue
    specs: dict[str, QueueSpec] = {}
    for entry in conf.task_queues or ({"name": conf.task_default_queue},):
        name, ex_name, ex_type, key = queue_fields(entry)
        if not ex_name:
            ex_name, ex_type = exchange, exchange_type
        specs[name] = QueueSpec(name, ex_name, ex_type or "direct", key or routing_key)
    return specs


def queue_fields(entry: Any) -> tuple[str, str | None, str | None, str | None]:
    """``(name, exchange, exchange type, routing key)`` of a kombu ``Queue`` (duck-typed) or a
    dict with its field names (the exchange a name, an ``Exchange`` or a dict)."""
    get = entry.get if isinstance(entry, Mapping) else lambda k: getattr(entry, k, None)
    exchange = get("exchange")
    if isinstance(exchange, Mapping):
        ex_name, ex_type = exchange.get("name"), exchange.get("type")
    elif isinstance(exchange, str) or exchange is None:
        ex_name, ex_type = exchange, get("exchange_type")
    else:  # a kombu Exchange
        ex_name, ex_type = getattr(exchange, "name", None), getattr(exchange, "type", None)
    return str(get("name")), ex_name or None, ex_type or None, get("routing_key") or None


class Router:
    """Resolves routes like Celery: explicit options, then ``task_routes``, then the default."""

    def __init__(self, conf: Config) -> None:
        self.conf = conf
        self._routes, self.by_name_only = _compile(conf.task_routes)
        self.queues = queue_specs(conf)
        self._plain: dict[tuple[Any, Any, Any], Route] = {}

    def queue(self, name: str) -> QueueSpec:
        """The queue's binding; a queue not in ``task_queues`` is created as Celery creates it
        (a direct exchange of its name), or refused when ``task_create_missing_queues`` is off."""
        spec = self.queues.get(name)
        if spec is not None:
            return spec
        if not self.conf.task_create_missing_queues:
            raise QueueNotFound(
                f"queue {name!r} is not in task_queues and task_create_missing_queues is off"
            )
        return QueueSpec(name, name, "direct", name)

    def route(
        self,
        name: str,
        options: Mapping[str, Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        task: Any = None,
    ) -> Route:
        """``task``: the task object when it is registered here, passed to router functions
        that take ``task=`` as Celery does. As in Celery, ``task_routes`` is consulted even when
        the call gives a destination, and what the call gives wins over the route."""
        queue = options.get("queue")
        exchange = options.get("exchange")
        routing_key = options.get("routing_key")
        extra: dict[str, Any] | None = None
        # A router function gets a copy it may change, as Celery's do.
        spec = self._lookup(name, args, kwargs or {}, dict(options), task) if self._routes else None
        if isinstance(spec, str):
            queue = queue or spec
        elif spec:
            queue = queue or spec.get("queue")
            exchange = exchange or spec.get("exchange")
            routing_key = routing_key or spec.get("routing_key")
            extra = _route_options(name, spec)
        if queue is not None and not isinstance(queue, str) and isinstance(queue, Mapping):
            # a kombu-style Queue given as a dict
            exchange = exchange or queue.get("exchange")
            routing_key = routing_key or queue.get("routing_key")
            queue = queue.get("name")
        if extra is not None:
            return self._destination(queue, exchange, routing_key, extra)
        # Without route options the answer depends only on these three: kept, as .delay() in a
        # loop asks the same question every time.
        key = (queue, exchange, routing_key)
        route = self._plain.get(key)
        if route is None:
            route = self._plain[key] = self._destination(queue, exchange, routing_key, None)
        return route

    def _destination(
        self, queue: Any, exchange: Any, routing_key: Any, extra: Mapping[str, Any] | None
    ) -> Route:
        queue = str(queue or self.conf.task_default_queue)
        binding = self.queue(queue)
        if (not exchange or not routing_key) and binding.exchange_type == "direct":
            # A direct exchange with the queue's own key: Celery publishes to the default
            # exchange, which delivers to the queue of that name.
            return Route(queue, "", queue, extra)
        if not exchange:  # through the queue's exchange (topic, fanout), with its key
            exchange, routing_key = binding.exchange, routing_key or binding.routing_key
        return Route(queue, str(exchange), str(routing_key or queue), extra)

    def _lookup(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        options: Mapping[str, Any],
        task: Any,
    ) -> RouteSpec:
        for route in self._routes:
            spec = route(name, args, kwargs, options, task)
            if spec:
                return spec
        return None


def _route_options(name: str, spec: Mapping[str, Any]) -> dict[str, Any] | None:
    unknown = set(spec) - ROUTE_OPTIONS - {"queue", "exchange", "routing_key"}
    if unknown:
        raise ConfigurationError(
            f"the task_routes entry for {name!r} has option(s) fastq cannot apply: "
            f"{sorted(unknown)}; a route may give queue, exchange, routing_key and "
            f"{', '.join(sorted(ROUTE_OPTIONS))}"
        )
    return {k: v for k, v in spec.items() if k in ROUTE_OPTIONS} or None


def _compile(routes: Any) -> tuple[list[RouterFn], bool]:
    """Celery's forms of ``task_routes``: one entry or a list/tuple of them, each a dict (names
    and glob/regex patterns), a list of (pattern, route) pairs, a router function, or the
    dotted name of one (``"proj.routers.route_task"``). And whether the routes depend on the
    task's name alone (no router function, which may read the arguments)."""
    if routes is None:
        return [], True
    if not isinstance(routes, (list, tuple)):
        routes = [routes]
    compiled: list[RouterFn] = []
    by_name_only = True
    for entry in routes:
        if isinstance(entry, str):
            entry = _import_router(entry)
        if isinstance(entry, Mapping):
            compiled.append(_map_router(entry.items()))
        elif isinstance(entry, (list, tuple)):
            compiled.append(_map_router(_pairs(entry)))
        elif hasattr(entry, "route_for_task"):  # a router object, Celery's older form
            by_name_only = False
            method = entry.route_for_task
            compiled.append(lambda name, args, kwargs, _o, _t, m=method: m(name, args, kwargs))
        elif callable(entry):
            by_name_only = False
            compiled.append(_call_router(entry))
        else:
            raise ConfigurationError(
                "task_routes entries must be dicts, lists of (pattern, route) pairs, router "
                f"functions or their dotted names, got {type(entry).__name__}"
            )
    return compiled, by_name_only


def _pairs(entry: Sequence[Any]) -> list[tuple[Any, Any]]:
    if not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in entry):
        raise ConfigurationError(
            f"a list in task_routes must hold (pattern, route) pairs, got {entry!r}"
        )
    return [(p[0], p[1]) for p in entry]


def _import_router(path: str) -> Any:
    """``"module.attribute"`` or ``"module:attribute"`` → the object."""
    module, sep, attr = path.partition(":")
    if not sep:
        module, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError(
            f"task_routes names {path!r}, which cannot be imported: {exc}"
        ) from exc


def _map_router(table: Iterable[tuple[Any, Any]]) -> RouterFn:
    """Exact names first, then patterns in the order given (Celery's MapRoute)."""
    exact: dict[str, RouteSpec] = {}
    patterns: list[tuple[re.Pattern[str], RouteSpec]] = []
    for key, spec in table:
        if isinstance(key, re.Pattern):
            patterns.append((key, spec))
        elif any(c in key for c in "*?["):
            patterns.append((re.compile(fnmatch.translate(key)), spec))
        else:
            exact[key] = spec

    def route(name: str, *_: Any) -> RouteSpec:
        if name in exact:
            return exact[name]
        for pattern, spec in patterns:
            if pattern.match(name):
                return spec
        return None

    return route


def _call_router(fn: Callable[..., Any]) -> RouterFn:
    # Celery passes ``task=`` only to routers that accept it; decided once from the signature,
    # so a TypeError raised inside the router itself is not mistaken for a signature mismatch.
    try:
        params = inspect.signature(fn).parameters
        takes_task = "task" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
        )
    except (TypeError, ValueError):
        takes_task = False

    def route(name: str, args: Any, kwargs: Any, options: Any, task: Any) -> RouteSpec:
        if takes_task:
            return fn(name, args, kwargs, options, task=task)  # type: ignore[no-any-return]
        return fn(name, args, kwargs, options)  # type: ignore[no-any-return]

    return route
