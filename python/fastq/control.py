"""Remote control, the client: ``app.control`` broadcasts a command to live workers and collects
their replies.

``fastq inspect registered|active|stats|ping`` and revoke go through here, over the broker's
``ControlChannel`` (``fastq.control_channel``: the wire format and what a broker provides). The
worker side answers in ``fastq.worker.control_server``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastq.control_channel import ControlCommand

if TYPE_CHECKING:
    from fastq.app import App


class Control:
    """``app.control``: talk to the live workers of this app's broker."""

    def __init__(self, app: App) -> None:
        self.app = app

    def broadcast(
        self,
        method: str,
        arguments: dict[str, Any] | None = None,
        *,
        destination: list[str] | None = None,
        reply: bool = True,
        timeout: float = 1.0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Sends a command to every worker (or those named in ``destination``); returns their
        replies, ``[{hostname: reply}, ...]``, collected for ``timeout`` seconds."""
        command = ControlCommand(method, arguments or {}, destination=destination, reply=reply)
        channel = self.app.broker.control_channel()
        if destination and limit is None:
            limit = len(destination)
        return channel.broadcast(command, timeout, limit)

    def inspect(
        self, method: str, *, destination: list[str] | None = None, timeout: float = 1.0
    ) -> dict[str, Any]:
        """``{hostname: reply}`` for ``registered``, ``active``, ``stats`` or ``ping``."""
        merged: dict[str, Any] = {}
        for reply in self.broadcast(method, destination=destination, timeout=timeout):
            merged.update(reply)
        return merged

    def revoke(
        self,
        task_id: str | list[str],
        *,
        terminate: bool = False,
        signal: str = "SIGTERM",
        destination: list[str] | None = None,
    ) -> None:
        """Tells every worker not to run ``task_id`` (one or a list) when it arrives; with
        ``terminate``, a prefork worker running it kills that child (the task ends REVOKED).
        Workers keep revoked ids in memory, as Celery's do: one started later has not heard."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        self.broadcast(
            "revoke",
            {"task_id": ids, "terminate": terminate, "signal": signal},
            destination=destination,
            reply=False,
        )

    def ping(self, *, destination: list[str] | None = None, timeout: float = 1.0) -> dict[str, Any]:
        return self.inspect("ping", destination=destination, timeout=timeout)
