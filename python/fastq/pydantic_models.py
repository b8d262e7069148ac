"""``@app.task(pydantic=True)`` (Celery 5.5+): arguments annotated with a pydantic model are
validated into that model on the worker, a returned model annotated as the return type is
dumped to JSON-ready data, and a client sending model instances dumps them first."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from fastq.errors import ConfigurationError


def _models() -> Any:
    try:
        import pydantic
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "pydantic=True needs pydantic installed (pip install 'pydantic>=2')"
        ) from exc
    return pydantic.BaseModel


def _model_of(annotation: Any, value: Any, base: type) -> Any:
    """The model class ``annotation`` names (``Model`` or ``Model | None`` with a value)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) != 1 or value is None:
            return None
        annotation = members[0]
    return annotation if isinstance(annotation, type) and issubclass(annotation, base) else None


def wrap(
    app: Any,
    fun: Callable[..., Any],
    name: str,
    strict: bool = False,
    context: Mapping[str, Any] | None = None,
    dump_kwargs: Mapping[str, Any] | None = None,
) -> Callable[..., Any]:
    """``fun`` validating its model arguments and dumping its model result; the wrapper's
    ``dump_arguments(args, kwargs, bound)`` is what a client applies before sending."""
    base = _models()
    signature = inspect.signature(fun)
    try:
        hints = typing.get_type_hints(fun)
    except (NameError, AttributeError, TypeError):
        hints = {k: p.annotation for k, p in signature.parameters.items()}
        hints["return"] = signature.return_annotation
    validation_context = {**(context or {}), "celery_app": app, "celery_task_name": name}
    dumping = {"mode": "json", **(dump_kwargs or {})}

    @functools.wraps(fun)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        for arg, value in bound.arguments.items():
            model = _model_of(hints.get(arg), value, base)
            if model is not None:
                bound.arguments[arg] = model.model_validate(
                    value, strict=strict, context=validation_context
                )
        returned = fun(*bound.args, **bound.kwargs)
        model = _model_of(hints.get("return"), returned, base)
        if model is not None and isinstance(returned, model):
            return returned.model_dump(**dumping)
        return returned

    def dump_arguments(args: Any, kwargs: Any, bound: bool = False) -> tuple[Any, Any]:
        """Model instances passed for model parameters, dumped so they can be sent."""
        args, kwargs = tuple(args or ()), dict(kwargs or {})
        try:
            binding = signature.bind(*([None] if bound else []), *args, **kwargs)
        except TypeError:
            return args, kwargs  # the argument check reports it
        for arg, value in binding.arguments.items():
            model = _model_of(hints.get(arg), value, base)
            if model is not None and isinstance(value, model):
                binding.arguments[arg] = value.model_dump(**dumping)
        sent_args = binding.args[1:] if bound else binding.args
        return tuple(sent_args), dict(binding.kwargs)

    wrapper.dump_arguments = dump_arguments  # type: ignore[attr-defined]
    return wrapper
