"""Celery's stamping (canvas "Stamping", Celery 5.3+): ``sig.stamp(visitor, **headers)`` adds
headers to a signature and every signature inside it (a chain's and a group's tasks, a chord's
header and body, link callbacks and errbacks). The stamps travel in a task message's
``stamped_headers`` (their names) and ``stamps`` (name -> value) headers, and a worker shows
them as ``self.request.stamped_headers`` and ``self.request.stamps``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastq.canvas import Signature


class StampingVisitor:
    """Decides the stamps of each part of a canvas: each hook returns the headers to stamp on
    that part (``on_signature`` must be given; the others add nothing unless overridden)."""

    def on_signature(self, actual_sig: Signature, **headers: Any) -> dict[str, Any]:
        raise NotImplementedError("a StampingVisitor must define on_signature")

    def on_group_start(self, group: Signature, **headers: Any) -> dict[str, Any]:
        return {}

    def on_group_end(self, group: Signature, **headers: Any) -> None:
        pass

    def on_chain_start(self, chain: Signature, **headers: Any) -> dict[str, Any]:
        return {}

    def on_chain_end(self, chain: Signature, **headers: Any) -> None:
        pass

    def on_chord_header_start(self, sig: Signature, **header: Any) -> dict[str, Any]:
        return self.on_group_start(_header_group(sig), **header)

    def on_chord_header_end(self, sig: Signature, **header: Any) -> None:
        self.on_group_end(_header_group(sig), **header)

    def on_chord_body(self, sig: Signature, **header: Any) -> dict[str, Any]:
        return {}

    def on_callback(self, callback: Signature, **header: Any) -> dict[str, Any]:
        return {}

    def on_errback(self, errback: Signature, **header: Any) -> dict[str, Any]:
        return {}


def _header_group(chord: Signature) -> Signature:
    from fastq.canvas import group

    header = chord.kwargs["header"]
    return header if isinstance(header, group) else group(*header, app=chord._app)


def merge(into: dict[str, Any], other: dict[str, Any], aggregate: bool) -> None:
    """Adds ``other``'s stamps to ``into``: new names are added; for a name in both, lists are
    joined, and otherwise ``aggregate`` makes a list of both values (else ``into``'s stays)."""
    for key, value in other.items():
        if key not in into:
            into[key] = value
        elif isinstance(into[key], dict) and isinstance(value, dict):
            merge(into[key], value, aggregate)
        elif isinstance(into[key], list) and isinstance(value, list):
            into[key] = [*into[key], *value]
        elif aggregate:
            into[key] = [*_as_list(into[key]), value]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def collect(
    sig: Signature,
    visitor_headers: dict[str, Any] | None,
    append: bool,
    headers: dict[str, Any],
    own: bool = True,
) -> dict[str, Any]:
    """The stamps for ``sig``: ``headers``, then the visitor's, then (with ``own``) those the
    signature already carries, with ``stamped_headers`` listing their names."""
    stamps = dict(headers)
    stamps.setdefault("stamped_headers", [k for k in headers if k != "stamped_headers"])
    if visitor_headers is not None:
        extra = dict(visitor_headers)
        extra.setdefault("stamped_headers", list(visitor_headers))
        merge(stamps, extra, append)
        stamps["stamped_headers"] = sorted(set(stamps["stamped_headers"]))
    if own:
        names = set(stamps["stamped_headers"]) | set(sig.options.get("stamped_headers") or [])
        stamps["stamped_headers"] = sorted(names)
        merge(stamps, {k: v for k, v in sig.options.items() if k in names}, append)
        stamps["stamped_headers"] = sorted(set(stamps["stamped_headers"]))
    return stamps


def stamp_links(
    sig: Signature, visitor: StampingVisitor | None, append: bool, headers: dict[str, Any]
) -> None:
    """Stamps ``sig``'s link callbacks (``on_callback``) and errbacks (``on_errback``)."""
    from fastq.canvas import maybe_signature

    for option, hook in (("link", "on_callback"), ("link_error", "on_errback")):
        links = sig.options.get(option) or []
        if isinstance(links, dict):
            links = [links]
        stamped = []
        for link in links:
            link = maybe_signature(link, app=sig._app)
            extra = getattr(visitor, hook)(link, **headers) or {} if visitor else None
            link.stamp(visitor, append, **collect(link, extra, append, dict(headers), own=False))
            stamped.append(link)
        if stamped:
            sig.options[option] = stamped


def sending_options(options: dict[str, Any]) -> dict[str, Any]:
    """Takes a signature's stamps out of ``options`` (``stamped_headers`` and the options they
    name) as ``{"stamped_headers": [...], "stamps": {...}}`` for ``build_message``, as Celery's
    ``send_task`` does; empty when it has none."""
    names = options.pop("stamped_headers", None)
    if not names:
        return {}
    names = _as_list(names)
    return {"stamped_headers": names, "stamps": {n: options.pop(n, None) for n in names}}
