"""Celery's publish retry: a publish that cannot reach the broker is tried again as
``task_publish_retry_policy`` (or a call's ``retry_policy``) says, then the error is raised
(``OperationalError``, which is fastq's ``BrokerConnectionError``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from fastq.errors import BrokerConnectionError, ConfigurationError

log = logging.getLogger("fastq.publish")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a publish again: up to ``max_retries`` more times (None: without end),
    waiting ``interval_start`` seconds, then ``interval_step`` more each time, at most
    ``interval_max``. Connection errors are retried, and the classes in ``retry_errors``."""

    max_retries: int | None = 3
    interval_start: float = 0.0
    interval_step: float = 0.2
    interval_max: float = 1.0
    retry_errors: tuple[type[BaseException], ...] = ()

    @classmethod
    def of(cls, *policies: Mapping[str, Any] | None) -> RetryPolicy:
        """The policy of these mappings, later ones winning (Celery merges a call's
        ``retry_policy`` over the setting). An unknown key is refused."""
        merged: dict[str, Any] = {}
        for policy in policies:
            merged.update(policy or {})
        unknown = sorted(set(merged) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigurationError(
                f"unknown retry policy key(s) {unknown}: a publish retry policy takes "
                "max_retries, interval_start, interval_step, interval_max and retry_errors"
            )
        errors = merged.get("retry_errors") or ()
        if isinstance(errors, type):
            errors = (errors,)
        max_retries = merged.get("max_retries", cls.max_retries)
        return cls(
            max_retries=None if max_retries is None else int(max_retries),
            interval_start=float(merged.get("interval_start", cls.interval_start)),
            interval_step=float(merged.get("interval_step", cls.interval_step)),
            interval_max=float(merged.get("interval_max", cls.interval_max)),
            retry_errors=tuple(errors),
        )

    def intervals(self) -> Iterator[float]:
        """The waits before each retry, as kombu's ``retry_over_time`` counts them."""
        interval = self.interval_start
        while True:
            yield min(interval, self.interval_max)
            interval += self.interval_step


def publish(
    send: Callable[[], T], *, retry: bool, policy: Callable[[], RetryPolicy], what: str
) -> T:
    """Calls ``send`` (one publish), again while it fails with a retried error and the policy
    allows; the last error is raised. ``policy`` is built only once a publish failed (the
    common case pays nothing for it). ``what`` names the message for the log."""
    if not retry:
        return send()
    try:
        return send()
    except Exception as first:
        chosen = policy()
        retried: tuple[type[BaseException], ...] = (BrokerConnectionError, *chosen.retry_errors)
        if not isinstance(first, retried) or _still_pending(first):
            raise
        exc: BaseException = first
    waits = chosen.intervals()
    retries = 0
    while True:
        if chosen.max_retries is not None and retries >= chosen.max_retries:
            raise exc
        wait = next(waits)
        retries += 1
        limit = "" if chosen.max_retries is None else f"/{chosen.max_retries}"
        log.warning(
            "could not publish %s (%s); retry %d%s in %.2fs", what, exc, retries, limit, wait
        )
        time.sleep(wait)
        try:
            return send()
        except retried as again:
            if _still_pending(again):
                raise
            exc = again


def _still_pending(exc: BaseException) -> bool:
    """A publish that ran out of ``publish_timeout`` on a blocked RabbitMQ leaves its messages on
    the connection, queued once the broker reads again: sending them again would queue them
    twice, so that error is raised at once (the Rust publisher words it so)."""
    return isinstance(exc, BrokerConnectionError) and "(publish_timeout" in str(exc)
