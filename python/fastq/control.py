"""Remote control, the client: ``app.control``, Celery's API (``celery/app/control.py``).

``app.control.inspect(destination=..., timeout=...).ping()`` and the other inspections return
``{hostname: reply}`` (None when nobody replied), ``app.control.ping()`` and ``broadcast(...,
reply=True)`` a list of ``{hostname: reply}``; the control commands (``revoke``, ``shutdown``,
``rate_limit``, ...) send without waiting unless given ``reply=True``. Everything travels over
the broker's ``ControlChannel`` (``fastq.control_channel``): on Redis that is Celery's pidbox,
so it reaches Celery workers as well as fastq's. The worker side answers in
``fastq.worker.control_server``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastq.control_channel import ControlCommand, matches

if TYPE_CHECKING:
    from fastq.app import App


def flatten_reply(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """``[{a: r1}, {b: r2}]`` → ``{a: r1, b: r2}``."""
    merged: dict[str, Any] = {}
    for reply in replies:
        merged.update(reply)
    return merged


class Inspect:
    """``app.control.inspect(...)``: queries whose replies are gathered by hostname."""

    def __init__(
        self,
        control: Control,
        destination: list[str] | str | None = None,
        timeout: float = 1.0,
        callback: Callable[[dict[str, Any]], None] | None = None,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout
        self.callback = callback
        self.limit = limit
        self.pattern = pattern
        self.matcher = matcher

    def _request(self, method: str, **arguments: Any) -> Any:
        destination = [self.destination] if isinstance(self.destination, str) else self.destination
        replies = self.control.broadcast(
            method,
            arguments,
            destination,
            reply=True,
            timeout=self.timeout,
            limit=self.limit,
            callback=self.callback,
            pattern=self.pattern,
            matcher=self.matcher,
        )
        if not replies:
            return None
        by_node = flatten_reply(replies)
        if isinstance(self.destination, str):  # Celery: one name asked, its reply alone
            return by_node.get(self.destination)
        if self.pattern and self.matcher:
            return {n: r for n, r in by_node.items() if matches(n, self.pattern, self.matcher)}
        return by_node

    def ping(self) -> Any:
        return self._request("ping")

    def active(self, safe: bool | None = None) -> Any:
        return self._request("active", safe=safe)

    def reserved(self, safe: bool | None = None) -> Any:
        return self._request("reserved")

    def scheduled(self, safe: bool | None = None) -> Any:
        return self._request("scheduled")

    def registered(self, *taskinfoitems: str) -> Any:
        return self._request("registered", taskinfoitems=list(taskinfoitems))

    registered_tasks = registered

    def stats(self) -> Any:
        return self._request("stats")

    def revoked(self) -> Any:
        return self._request("revoked")

    def active_queues(self) -> Any:
        return self._request("active_queues")

    def query_task(self, *ids: str) -> Any:
        flat: list[str] = []
        for i in ids:  # Celery accepts ids or lists of them
            flat.extend([i] if isinstance(i, str) else list(i))
        return self._request("query_task", ids=flat)

    def conf(self, with_defaults: bool = False) -> Any:
        return self._request("conf", with_defaults=with_defaults)

    def clock(self) -> Any:
        return self._request("clock")

    def hello(self, from_node: str, revoked: Any = None) -> Any:
        return self._request("hello", from_node=from_node, revoked=revoked)


class Control:
    """``app.control``: talk to the live workers (fastq's and Celery's) of this app's broker."""

    def __init__(self, app: App) -> None:
        self.app = app

    def inspect(
        self,
        destination: list[str] | str | None = None,
        timeout: float = 1.0,
        callback: Callable[[dict[str, Any]], None] | None = None,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> Inspect:
        return Inspect(self, destination, timeout, callback, limit, pattern, matcher)

    def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: list[str] | None = None,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
        **extra: Any,
    ) -> list[dict[str, Any]] | None:
        """Sends ``command`` to every worker (or those in ``destination``, or whose name
        ``pattern`` matches with ``matcher`` ``glob``/``pcre``); with ``reply``, returns the
        replies ``[{hostname: reply}, ...]`` collected for ``timeout`` seconds (stopping at
        ``limit``, by default the number of destinations), else None."""
        if destination is not None and not isinstance(destination, (list, tuple)):
            raise ValueError(f"destination must be a list/tuple, not {type(destination)}")
        message = ControlCommand(
            command,
            dict(arguments or {}, **extra),
            destination=list(destination) if destination else None,
            reply=reply,
            pattern=pattern if pattern and matcher else None,
            matcher=matcher if pattern and matcher else None,
        )
        if destination and limit is None:
            limit = len(destination)
        replies = self.app.broker.control_channel().broadcast(message, timeout, limit)
        if not reply:
            return None
        if callback is not None:
            for one in replies:
                callback(one)
        return replies

    def ping(
        self, destination: list[str] | None = None, timeout: float = 1.0, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """``[{hostname: {"ok": "pong"}}, ...]``."""
        return self.broadcast("ping", {}, destination, reply=True, timeout=timeout, **kwargs) or []

    def revoke(
        self,
        task_id: str | list[str],
        destination: list[str] | None = None,
        terminate: bool = False,
        signal: str = "SIGTERM",
        **kwargs: Any,
    ) -> list[dict[str, Any]] | None:
        """Tells every worker not to run ``task_id`` (one or a list) when it arrives; with
        ``terminate``, a prefork worker running it kills that child (the task ends REVOKED).
        Workers keep revoked ids in memory, as Celery's do: one started later has not heard."""
        return self.broadcast(
            "revoke",
            {"task_id": task_id, "terminate": terminate, "signal": signal},
            destination,
            **kwargs,
        )

    def terminate(
        self,
        task_id: str | list[str],
        destination: list[str] | None = None,
        signal: str = "SIGTERM",
        **kwargs: Any,
    ) -> list[dict[str, Any]] | None:
        return self.revoke(task_id, destination, terminate=True, signal=signal, **kwargs)

    def rate_limit(
        self,
        task_name: str,
        rate_limit: str | float,
        destination: list[str] | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]] | None:
        return self.broadcast(
            "rate_limit",
            {"task_name": task_name, "rate_limit": rate_limit},
            destination,
            **kwargs,
        )

    def time_limit(
        self,
        task_name: str,
        soft: float | None = None,
        hard: float | None = None,
        destination: list[str] | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]] | None:
        return self.broadcast(
            "time_limit",
            {"task_name": task_name, "hard": hard, "soft": soft},
            destination,
            **kwargs,
        )

    def add_consumer(
        self,
        queue: str,
        exchange: str | None = None,
        exchange_type: str = "direct",
        routing_key: str | None = None,
        options: dict[str, Any] | None = None,
        destination: list[str] | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]] | None:
        arguments = {
            "queue": queue,
            "exchange": exchange,
            "exchange_type": exchange_type,
            "routing_key": routing_key,
            **(options or {}),
        }
        return self.broadcast("add_consumer", arguments, destination, **kwargs)

    def cancel_consumer(
        self, queue: str, destination: list[str] | None = None, **kwargs: Any
    ) -> list[dict[str, Any]] | None:
        return self.broadcast("cancel_consumer", {"queue": queue}, destination, **kwargs)

    def enable_events(
        self, destination: list[str] | None = None, **kwargs: Any
    ) -> list[dict[str, Any]] | None:
        return self.broadcast("enable_events", {}, destination, **kwargs)

    def disable_events(
        self, destination: list[str] | None = None, **kwargs: Any
    ) -> list[dict[str, Any]] | None:
        return self.broadcast("disable_events", {}, destination, **kwargs)

    def pool_grow(
        self, n: int = 1, destination: list[str] | None = None, **kwargs: Any
    ) -> list[dict[str, Any]] | None:
        return self.broadcast("pool_grow", {"n": n}, destination, **kwargs)

    def pool_shrink(
        self, n: int = 1, destination: list[str] | None = None, **kwargs: Any
    ) -> list[dict[str, Any]] | None:
        return self.broadcast("pool_shrink", {"n": n}, destination, **kwargs)

    def shutdown(
        self, destination: list[str] | None = None, **kwargs: Any
    ) -> list[dict[str, Any]] | None:
        """Warm shutdown: each worker stops taking tasks, finishes the running ones, exits."""
        return self.broadcast("shutdown", {}, destination, **kwargs)

    def heartbeat(
        self, destination: list[str] | None = None, **kwargs: Any
    ) -> list[dict[str, Any]] | None:
        return self.broadcast("heartbeat", {}, destination, **kwargs)

    def purge(self) -> int:
        """Discards the messages waiting in the app's queues (``task_queues``, else the default
        queue); returns how many."""
        return sum(self.app.broker.purge(queue) for queue in self.app.router.queues)

    discard_all = purge
