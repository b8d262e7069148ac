"""The typed task API, checked by mypy, never run (``tests/test_typing.py`` runs mypy on it).

``assert_type`` fails the check when a type is not the one given. Each ``# type: ignore[code]``
marks a call that must be an error: ``warn_unused_ignores`` (pyproject.toml, for this module)
fails the check when mypy stops reporting it.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from fastq import (
    App,
    AsyncResult,
    Celery,
    GroupResult,
    Signature,
    Task,
    chain,
    group,
    shared_task,
)
from fastq.result import EagerResult, ResultNode
from typing_extensions import assert_type

app = App("typing")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="typing.greet", queue="low")
def greet(name: str, *, punctuation: str = "!") -> str:
    return f"hello {name}{punctuation}"


@app.task(bind=True, max_retries=5)
def count(self: Task, items: list[str]) -> int:
    return len(items) + self.request.retries


@app.task
async def fetch(url: str) -> bytes:
    return url.encode()


@app.task(bind=True)
async def fetch_bound(self, url: str) -> bytes:  # an unannotated self is fine
    return url.encode()


@app.task
def untyped(x, y):
    return x


# -- calling and sending: the parameters are the function's, the results its return type -------
typed_add: Task[[int, int], int] = add
assert_type(add(1, 2), int)
assert_type(add.delay(1, 2), AsyncResult[int])
assert_type(add.delay(1, 2).get(), int)
assert_type(add.delay(1, 2).get(timeout=10, propagate=False), int)
assert_type(add.apply_async((1, 2), countdown=10).get(), int)
assert_type(add.apply((1, 2)), EagerResult[int])
assert_type(add.AsyncResult("an id").get(), int)
assert_type(greet.delay("you", punctuation="?").get(), str)

add.delay("a", 2)  # type: ignore[arg-type]
add.delay(1)  # type: ignore[call-arg]
add.delay(1, 2, 3)  # type: ignore[call-arg]
add.delay(x=1, z=2)  # type: ignore[call-arg]
add("a", "b")  # type: ignore[arg-type]
greet.delay("you", punctuation=1)  # type: ignore[arg-type]
wrong: str = add.delay(1, 2).get()  # type: ignore[assignment]

# -- bind=True: ``self`` is not one of the parameters -------------------------------------------
typed_count: Task[[list[str]], int] = count
assert_type(count.delay(["a"]).get(), int)
count.delay()  # type: ignore[call-arg]
count.delay(count, ["a"])  # type: ignore[arg-type, call-arg]

# -- async def: the result is the awaited value; a direct call gives the coroutine --------------
assert_type(fetch.delay("u").get(), bytes)
assert_type(fetch("u"), Coroutine[Any, Any, bytes]).close()
assert_type(fetch_bound.delay("u").get(), bytes)
fetch.delay(1)  # type: ignore[arg-type]


async def awaits() -> None:
    assert_type(await add.delay(1, 2), int)


# -- untyped functions and results by id stay Any ---------------------------------------------
assert_type(untyped.delay(object(), y=1).get(), Any)
assert_type(AsyncResult("an id"), AsyncResult[Any])
assert_type(AsyncResult("an id").get(), Any)
assert_type(app.AsyncResult("an id").get(), Any)
assert_type(app.send_task("typing.add", (1, 2)).get(), Any)
covariant: AsyncResult[object] = add.delay(1, 2)

# -- signatures ---------------------------------------------------------------------------------
assert_type(add.s(1), Signature[int])
assert_type(add.s(1).delay(2).get(), int)
assert_type(add.s(1).set(countdown=10).apply_async((2,)).get(), int)
assert_type(add.si(1, 2), Signature[int])
add.si("a", 2)  # type: ignore[arg-type]
add.si(1)  # type: ignore[call-arg]
# Workflows: a group's result is a GroupResult; a chain's is its last step's, which may be a
# group's, so only a ResultNode (``|`` builds a plain Signature: AsyncResult[Any]).
assert_type(group(add.s(1, 1), add.s(2, 2)).delay(), GroupResult)
assert_type(group(add.s(1, 1), add.s(2, 2))(), GroupResult)
assert_type(group(add.s(1, 1), add.s(2, 2)).apply_async(countdown=1).get(), list[Any])
assert_type(group(add.s(1, 1), add.s(2, 2)).apply(), GroupResult)
assert_type(chain(add.s(1, 2), add.s(3)).delay(), ResultNode)
assert_type(chain(add.s(1, 2), add.s(3)).apply_async(), ResultNode)
assert_type((add.s(1, 2) | add.s(3)).delay().get(), Any)

# -- Celery's name for the app ------------------------------------------------------------------
celery_app = Celery("typing-celery")


@celery_app.task
def mul(x: int, y: int) -> int:
    return x * y


assert_type(mul.delay(2, 3).get(), int)


# -- @shared_task: typed as @app.task ------------------------------------------------------------
@shared_task
def shared_add(x: int, y: int) -> int:
    return x + y


@shared_task(bind=True, name="typing.shared_count")
def shared_count(self: Task, items: list[str]) -> int:
    return len(items)


assert_type(shared_add.delay(1, 2).get(), int)
assert_type(shared_count.delay(["a"]), AsyncResult[int])
shared_add.delay("1", 2)  # type: ignore[arg-type]
