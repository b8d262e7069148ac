"""The type variables of the typed task API: ``Task[P, R]``, ``AsyncResult[R]``,
``Signature[R]``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

#: A task's parameters (without ``self`` for ``bind=True``).
P = ParamSpec("P")

if TYPE_CHECKING:
    # PEP 696 defaults (typing has them from 3.13 only): a bare ``AsyncResult(id)`` is then
    # ``AsyncResult[Any]`` rather than an error asking for an annotation. Type checkers read
    # typing_extensions from typeshed, so it need not be installed.
    from typing_extensions import TypeVar as DefaultTypeVar

    #: The value of a task's result: what it returns, awaited for an ``async def`` task.
    #: Covariant: results are only read, so an ``AsyncResult[int]`` is an ``AsyncResult[object]``.
    R = DefaultTypeVar("R", covariant=True, default=Any)
    #: What calling a task directly returns: ``R``, except for ``async def`` (its coroutine).
    RCall = DefaultTypeVar("RCall", covariant=True, default=R)
else:  # a default changes nothing at run time
    R = TypeVar("R", covariant=True)
    RCall = TypeVar("RCall", covariant=True)
