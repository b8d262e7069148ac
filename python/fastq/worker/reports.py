"""The report pipe: what a prefork child tells its supervisor, one line at a time.

- ``S <id> <tag|-> <deadline|-> <name|-> <L|-> <request>``: a task started (``L``:
  acknowledged after it runs). ``<request>`` is what the supervisor needs to record the
  task's result should the child not live to (``encode_request``): mostly the client's
  ``reply_to``, so it stays short.
- ``D``: the task ended; ``DL``: it ended and its late ack is still to be sent.
- ``K <id> <JSON>``: a copy of a result the child has not stored yet.
- ``k``: every result handed over is stored, and every late ack sent.
- ``M <JSON>``: the child's metrics since its last ``M`` line (``worker/metrics.py``), with
  ``--metrics-port`` only.
- ``E <JSON>``: a task event (``fastq.events``), which the supervisor publishes as it is, its
  clock spliced in; written with the next line above, so events cost the child no write of
  their own. The ``task-received`` of a fetched batch are encoded in one call, when it arrives
  (``TaskEvents.fetched``), a task's ``task-started`` and ``task-succeeded`` in one call each.
- ``R <JSON>``: what the child holds and has not started (``worker/held.py``: the rest of its
  fetched batch, ETA and rate-limited tasks), replacing what it said before; written with the
  start report that follows a fetch (an ``S`` line takes its task out), on its own only when
  something left without starting (revoked, expired, handed back to the broker).

The child writes them (``SupervisorReporter``); the supervisor reads them (``_core.split_reports``
takes the ``E`` lines off a chunk in one pass; ``parse_start``), and
decodes a request (``decode_request``) only to record a task the child did not finish
(``worker/lost.py``). The other way, down a pipe of its own, the supervisor tells each child
which ids to skip, drop or end (``worker/revoke.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fastq import _core, errors
from fastq.task import Context
from fastq.worker.held import Entry, encode_entries

if TYPE_CHECKING:
    from fastq.brokers.base import Delivery

log = logging.getLogger("fastq.worker")

JSON = "application/json"
#: Request fields a stored result or a follow-up reads, described when they are set.
_FIELDS = ("group", "group_index", "parent_id", "chord", "chain", "errbacks")
_ROUTE = ("reply_to", "correlation_id", "root_id", "parent_id", "group", "group_index")


def encode_request(request: Context, with_args: bool) -> str:
    """The child's side, per task: ``<reply_to or ->``, then `` <JSON>`` of the other request
    fields the supervisor would need, when any is set. A plain task from a fastq or Celery
    client has none of them, so this is usually the reply queue's name alone: no encoding."""
    reply_to = request.reply_to or "-"
    task_id = request.id
    fields: dict[str, Any] = {}
    if " " in reply_to or "\n" in reply_to:  # not a token: it goes in the JSON
        fields["reply_to"], reply_to = reply_to, "-"
    if request.correlation_id and request.correlation_id != task_id:
        fields["correlation_id"] = request.correlation_id
    if request.root_id and request.root_id != task_id:
        fields["root_id"] = request.root_id
    for name in _FIELDS:
        value = getattr(request, name)
        if value is not None:
            fields[name] = value
    if request.ignore_result:
        fields["ignore_result"] = True
    # What only the stored meta (``result_extended``) or an errback given the request reads.
    if with_args or request.errbacks:
        fields["args"] = request.args
        fields["kwargs"] = request.kwargs
        fields["retries"] = request.retries
        fields["queue"] = (request.delivery_info or {}).get("routing_key")
    if not fields:
        return reply_to
    if len(fields) == 1 and request.ignore_result:  # results off: the common case, encoded once
        return f"{reply_to} {_IGNORED}"
    return f"{reply_to} {_encode(fields)}"


def _encode(fields: dict[str, Any]) -> str:
    """JSON of ``fields``; what JSON cannot carry is left out (args first, then all but the
    route)."""
    try:
        return _core.dumps(fields, JSON).decode()
    except errors.EncodeError:  # values JSON cannot carry (pickle accepted): leave them out
        pass
    fields.pop("args", None)
    fields.pop("kwargs", None)
    try:
        return _core.dumps(fields, JSON).decode()
    except errors.EncodeError as exc:
        dropped = ", ".join(sorted(k for k in fields if k not in _ROUTE))
        log.warning(
            "a task's %s cannot be written as JSON (%s): should its child die, the supervisor "
            "records the task without them (no chord part, chain or errback follows)",
            dropped,
            exc,
        )
        return _core.dumps({k: fields[k] for k in _ROUTE if k in fields}, JSON).decode()


def decode_request(task: ReportedTask, hostname: str) -> Context:
    """The supervisor's side: the request of ``task``, as its child encoded it."""
    fields: dict[str, Any] = {}
    reply_to, _, encoded = task.request.partition(" ")
    if encoded:
        try:
            decoded = _core.loads(encoded.encode(), JSON, [JSON])
            if isinstance(decoded, dict):
                fields = decoded
        except errors.DecodeError as exc:
            log.warning("task %s: unreadable start report (%s)", task.task_id, exc)
    if reply_to not in ("", "-"):
        fields["reply_to"] = reply_to
    queue = fields.pop("queue", None)
    return Context(
        **{
            "args": (),
            "kwargs": {},
            **fields,
            "id": task.task_id,
            "task": task.name or None,
            "hostname": hostname,
            "delivery_info": {"routing_key": queue} if queue else {},
            "delivery_tag": task.delivery_tag,
            "called_directly": False,
        }
    )


class HeldEvents(Protocol):
    """Task events held until a report carries them (``fastq.events.TaskEvents``)."""

    @property
    def held(self) -> Sized:
        """What it holds (``_core.EventLines``): written when not empty."""

    def take(self) -> bytes: ...


class SupervisorReporter:
    """The child's end of the report pipe (the loop's ``TaskReporter`` in a prefork child).

    A start line carries what the supervisor needs to record the task's result if the child
    does not live to (``encode_request``): mostly the client's ``reply_to``, so it stays short.
    """

    def __init__(self, fd: int, with_args: bool = False) -> None:
        self.fd = fd
        #: The task events held since the last report (``fastq.events.TaskEvents``), written
        #: as ``E`` lines before the next report.
        self.events: HeldEvents | None = None
        #: An ``R`` line not written yet, written with the next report.
        self._pending: list[bytes] = []
        #: Describe args and kwargs too (``result_extended``: the stored result carries them).
        self.with_args = with_args

    def started(self, request: Context, hard_deadline: float | None, acks_late: bool) -> None:
        deadline = f"{hard_deadline:.3f}" if hard_deadline else "-"
        name = (request.task or "").replace(" ", "_") or "-"
        tag = getattr(request, "delivery_tag", None) or "-"
        late = "L" if acks_late else "-"
        encoded = encode_request(request, self.with_args)
        self._write(f"S {request.id} {tag} {deadline} {name} {late} {encoded}\n")

    def finished(self) -> None:
        self._write("D\n")

    def hand_over(self, results: list[tuple[str, dict[str, Any]]], late_ack: bool) -> None:
        """The end of a task, with copies of the results not stored yet and whether its late
        ack is still to be sent: should the child die before its batch is flushed, the
        supervisor stores them and settles the message (``finished`` otherwise)."""
        copies, complete = self._copies(results)
        # A result with no copy (not JSON) leaves its message to come back should the child die.
        end = "DL" if late_ack and complete else "D"
        self._write(f"{copies}{end}\n")

    def kept(self, results: list[tuple[str, dict[str, Any]]]) -> None:
        """Results the child could not store (the backend is down) and keeps: copies."""
        lines, _ = self._copies(results)
        if lines:
            self._write(lines)

    def stored(self) -> None:
        """Every result handed over is stored now, and every late ack sent."""
        self._write("k\n")

    def metrics(self, encoded: str) -> None:
        """What the child counted since it last said (``metrics.encode``: one line)."""
        self._write(f"M {encoded}\n")

    @staticmethod
    def _copies(results: list[tuple[str, dict[str, Any]]]) -> tuple[str, bool]:
        """``K`` lines, and whether every result has one (JSON only; the rest is left to the
        child itself)."""
        lines = []
        for task_id, meta in results:
            try:
                data = _core.dumps(meta, JSON).decode()
            except errors.EncodeError:
                continue
            if "\n" not in data and " " not in task_id and "\n" not in task_id:
                lines.append(f"K {task_id} {data}\n")
        return "".join(lines), len(lines) == len(results)

    def held(self, entries: list[Entry]) -> None:
        """What the child holds and has not started, sent with the next report
        (``flush_events`` if none follows)."""
        self._pending.append(b"R " + encode_entries(entries) + b"\n")

    def held_deliveries(self, deliveries: list[Delivery]) -> bool:
        """``held`` for what the child holds when that is the rest of a fetched batch, written
        in one call (``_core.encode_held``); False when Python must read them (``held``)."""
        encoded = _core.encode_held(deliveries)
        if encoded is None:
            return False
        self._pending.append(b"R " + encoded + b"\n")
        return True

    def flush_events(self) -> None:
        """Writes the lines waiting for a report (task events, what the child holds), when no
        report follows to carry them."""
        self._write("")

    def _write(self, line: str) -> None:
        data = line.encode()
        events = self.events
        if events is not None and events.held:
            data = events.take() + data
        if self._pending:
            data = b"".join(self._pending) + data
            self._pending.clear()
        if not data:
            return
        try:
            while data:  # a long line (a big chain) may go in parts; this child is its only writer
                data = data[os.write(self.fd, data) :]
        except OSError:  # the supervisor is gone; the child's own shutdown handles the rest
            pass


@dataclass
class ReportedTask:
    """A task a child reported it started: what the supervisor knows of it."""

    task_id: str
    delivery_tag: str
    deadline: float | None
    name: str = ""
    #: Its message is acknowledged after it runs: a dead child's broker gives it back.
    acks_late: bool = False
    #: Its request as the child encoded it (``encode_request``), decoded only when needed
    #: (``decode_request``).
    request: str = ""


def parse_start(line: bytes) -> ReportedTask | None:
    """The task of an ``S`` line; None for a malformed one."""
    parts = line.decode(errors="replace").split(" ", 6)
    if len(parts) < 6:
        return None
    _, task_id, tag, deadline, name, late = parts[:6]
    return ReportedTask(
        task_id,
        "" if tag == "-" else tag,
        None if deadline == "-" else float(deadline),
        "" if name == "-" else name,
        acks_late=late == "L",
        request=parts[6] if len(parts) == 7 else "",
    )


_IGNORED = _encode({"ignore_result": True})
