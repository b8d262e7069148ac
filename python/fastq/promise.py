"""A promise as far as ``AsyncResult.then`` needs one (vine's, which Celery returns): called once
with a value or thrown once with an error, it passes either on to the promises chained with
``then``, at once for those chained after it settled."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("fastq.results")


class Promise:
    """``Promise(fn, on_error)``: calling it runs ``fn`` with the arguments and passes its
    return value on; an error (thrown, or raised by ``fn``) goes to ``on_error`` when given,
    else on to the chained promises."""

    def __init__(
        self,
        fn: Callable[..., Any] | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
    ) -> None:
        self.fn = fn
        self.on_error = on_error
        self.ready = False
        self.failed = False
        self.value: Any = None
        self.reason: BaseException | None = None
        self._then: list[Promise] = []
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.ready or self.failed:
            return self.value
        try:
            value = self.fn(*args, **kwargs) if self.fn is not None else (args[0] if args else None)
        except Exception as exc:
            self.throw(exc)
            return None
        with self._lock:
            self.ready, self.value = True, value
            chained, self._then = self._then, []
        for promise in chained:
            promise(value)
        return value

    def throw(self, exc: BaseException) -> None:
        with self._lock:
            if self.ready or self.failed:
                return
            self.failed, self.reason = True, exc
            chained, self._then = self._then, []
        if self.on_error is not None:
            self.on_error(exc)
        elif not chained:
            log.error("a result callback failed, and nothing handles it: %r", exc, exc_info=exc)
        for promise in chained:
            promise.throw(exc)

    def then(
        self,
        callback: Callable[..., Any] | Promise,
        on_error: Callable[[BaseException], Any] | None = None,
    ) -> Promise:
        """Chains ``callback`` (called with this promise's value); returns its promise."""
        promise = callback if isinstance(callback, Promise) else Promise(callback, on_error)
        with self._lock:
            if not (self.ready or self.failed):
                self._then.append(promise)
                return promise
        if self.ready:
            promise(self.value)
        else:
            assert self.reason is not None
            promise.throw(self.reason)
        return promise
