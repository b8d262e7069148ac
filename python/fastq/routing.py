"""Where a task goes: ``task_routes`` and per-call options resolved to queue, exchange, key."""

from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastq.config import Config
from fastq.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class Route:
    queue: str
    #: ``""`` is the default exchange: the message goes straight to the queue named by the key.
    exchange: str
    routing_key: str


RouteSpec = Mapping[str, Any] | str | None
RouterFn = Callable[..., RouteSpec]


class Router:
    """Resolves routes like Celery: explicit options, then ``task_routes``, then the default."""

    def __init__(self, conf: Config) -> None:
        self.conf = conf
        self._routes = _compile(conf.task_routes)

    def route(
        self,
        name: str,
        options: Mapping[str, Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Route:
        queue = options.get("queue")
        exchange = options.get("exchange")
        routing_key = options.get("routing_key")
        if queue is None and exchange is None and routing_key is None:
            spec = self._lookup(name, args, kwargs or {}, options)
            if isinstance(spec, str):
                queue = spec
            elif spec:
                queue = spec.get("queue")
                exchange = spec.get("exchange")
                routing_key = spec.get("routing_key")
        if isinstance(queue, Mapping):  # a kombu-style Queue given as a dict
            exchange = exchange or queue.get("exchange")
            routing_key = routing_key or queue.get("routing_key")
            queue = queue.get("name")
        queue = str(queue or self.conf.task_default_queue)
        if exchange in (None, "", queue) and routing_key in (None, queue):
            # A direct route to a queue of the same name: Celery publishes it to the default
            # exchange with the queue name as key.
            return Route(queue, "", queue)
        return Route(queue, str(exchange or ""), str(routing_key or queue))

    def _lookup(
        self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: Mapping[str, Any]
    ) -> RouteSpec:
        for route in self._routes:
            spec = route(name, args, kwargs, options)
            if spec:
                return spec
        return None


def _compile(routes: Any) -> list[RouterFn]:
    if routes is None:
        return []
    if isinstance(routes, (Mapping, str)) or callable(routes):
        routes = [routes]
    compiled: list[RouterFn] = []
    for entry in routes:
        if isinstance(entry, Mapping):
            compiled.append(_map_router(entry))
        elif callable(entry):
            compiled.append(_call_router(entry))
        else:
            raise ConfigurationError(
                f"task_routes entries must be dicts or callables, got {type(entry).__name__}"
            )
    return compiled


def _map_router(table: Mapping[Any, Any]) -> RouterFn:
    exact: dict[str, RouteSpec] = {}
    patterns: list[tuple[re.Pattern[str], RouteSpec]] = []
    for key, spec in table.items():
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

    def route(name: str, args: Any, kwargs: Any, options: Any) -> RouteSpec:
        if takes_task:
            return fn(name, args, kwargs, options, task=None)  # type: ignore[no-any-return]
        return fn(name, args, kwargs, options)  # type: ignore[no-any-return]

    return route
