"""Beat's entries: from ``beat_schedule`` (the configuration), and stored on the broker at run
time (``StoredEntries``: ``fastq beat add/remove`` and the API below), in one checked form."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from fastq.errors import ConfigurationError
from fastq.schedules import BaseSchedule, crontab, maybe_schedule, schedule

if TYPE_CHECKING:
    from fastq.app import App
    from fastq.beat.state import BeatState

log = logging.getLogger("fastq.beat")

#: Keys of an entry: Celery's, and fastq's ``catch_up``.
ENTRY_KEYS = {"task", "schedule", "args", "kwargs", "options", "relative", "catch_up"}


@dataclass
class Entry:
    """One periodic task: ``name`` is its ``beat_schedule`` key."""

    name: str
    task: str
    schedule: BaseSchedule
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    catch_up: str = "once"
    stored: bool = False  # added at run time, not in beat_schedule


def entry_from_spec(name: str, spec: Any, app: App, where: str = "beat_schedule") -> Entry:
    """An ``Entry`` from a ``beat_schedule``-style dict, checked."""
    what = f"{where}[{name!r}]"
    if not isinstance(spec, Mapping):
        raise ConfigurationError(f"{what} must be a dict, got {spec!r}")
    unknown = set(spec) - ENTRY_KEYS
    if unknown:
        raise ConfigurationError(
            f"{what}: unknown key(s) {sorted(unknown)}; known: {sorted(ENTRY_KEYS)}"
        )
    if not isinstance(spec.get("task"), str):
        raise ConfigurationError(f"{what} needs 'task': the task's name")
    if "schedule" not in spec:
        raise ConfigurationError(f"{what} needs 'schedule'")
    if spec.get("relative"):
        raise ConfigurationError(f"{what}: relative schedules are not supported; use a crontab")
    catch_up = spec.get("catch_up", app.conf.beat_catch_up)
    if catch_up not in ("once", "skip"):
        raise ConfigurationError(f"{what}: catch_up must be 'once' or 'skip', got {catch_up!r}")
    args = spec.get("args") or ()
    if not isinstance(args, (list, tuple)):
        raise ConfigurationError(f"{what}: args must be a list or tuple")
    runs = maybe_schedule(spec["schedule"], app)
    try:
        runs.next_run_after(datetime.now(timezone.utc))
    except ConfigurationError as exc:
        raise ConfigurationError(f"{what}: {exc}") from None
    return Entry(
        name=name,
        task=spec["task"],
        schedule=runs,
        args=tuple(args),
        kwargs=dict(spec.get("kwargs") or {}),
        options=dict(spec.get("options") or {}),
        catch_up=catch_up,
    )


def entries_from_conf(app: App) -> dict[str, Entry]:
    """The entries of ``beat_schedule`` (after ``app.finalize()``, so ``add_periodic_task``
    calls in ``on_after_configure`` receivers count), checked."""
    return {name: entry_from_spec(name, spec, app) for name, spec in app.conf.beat_schedule.items()}


# -- entries stored on the broker -----------------------------------------------------------------


def schedule_to_json(value: Any) -> dict[str, Any]:
    """``{"every": seconds}`` or ``{"crontab": [minute, hour, day_of_week, day_of_month,
    month_of_year]}``, each field as given (a string, a number, or a list)."""
    if isinstance(value, crontab):
        return {
            "crontab": [sorted(f) if isinstance(f, (set, frozenset)) else f for f in value._orig]
        }
    if isinstance(value, (int, float, timedelta)) and not isinstance(value, bool):
        value = schedule(value)
    if isinstance(value, schedule):
        return {"every": value.seconds}
    raise ConfigurationError(
        f"a stored entry's schedule must be seconds, a timedelta or a crontab; got {value!r}"
    )


def schedule_from_json(value: Mapping[str, Any]) -> BaseSchedule:
    if "every" in value:
        return schedule(float(value["every"]))
    minute, hour, day_of_week, day_of_month, month_of_year = value["crontab"]
    return crontab(minute, hour, day_of_week, day_of_month, month_of_year)


#: Stored entries already reported as unreadable (each is logged once per process).
_REPORTED: set[tuple[str, str]] = set()


def entries_from_state(state: BeatState, app: App) -> dict[str, Entry]:
    """The stored entries; one that cannot be read is left out, with an error logged."""
    entries = {}
    for name, text in state.stored_entries().items():
        try:
            spec = json.loads(text)
            spec["schedule"] = schedule_from_json(spec["schedule"])
            entry = entry_from_spec(name, spec, app, where="stored entry")
        except (ValueError, KeyError, TypeError, ConfigurationError) as exc:
            if (name, text) not in _REPORTED:
                _REPORTED.add((name, text))
                log.error("beat: stored entry %r cannot be read, left out: %r", name, exc)
            continue
        entry.stored = True
        entries[name] = entry
    return entries


class StoredEntries:
    """Entries kept on the broker, which every beat process picks up while it runs (within a
    third of ``beat_lease_timeout``), with no restart::

        entries = StoredEntries(app)
        entries.add("report", "proj.report", crontab(minute=0), args=[1])
        entries.remove("report")
        entries.list()  # the stored and the configured entries, by name
    """

    def __init__(self, app: App, state: BeatState | None = None) -> None:
        from fastq.beat.state import state_for

        self.app = app
        self.state = state or state_for(app.conf, app.broker_url, app.result_backend_url)

    def add(
        self,
        name: str,
        task: str,
        schedule: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        catch_up: str | None = None,
    ) -> Entry:
        """Adds or replaces the stored entry ``name``; a ``beat_schedule`` name is refused
        (the configuration owns it)."""
        self.app.finalize()
        if name in self.app.conf.beat_schedule:
            raise ConfigurationError(
                f"{name!r} is in beat_schedule: change it there, or store it under another name"
            )
        spec: dict[str, Any] = {
            "task": task,
            "schedule": schedule_to_json(schedule),
            "args": list(args),
            "kwargs": dict(kwargs or {}),
            "options": dict(options or {}),
        }
        if catch_up is not None:
            spec["catch_up"] = catch_up
        text = json.dumps(spec)  # refuses what JSON cannot carry, before anything is stored
        entry = entry_from_spec(
            name, {**spec, "schedule": schedule_from_json(spec["schedule"])}, self.app, "entry"
        )
        self.state.put_entry(name, text)
        entry.stored = True
        return entry

    def remove(self, name: str) -> bool:
        """Removes the stored entry ``name``; False if there was none."""
        return self.state.delete_entry(name)

    def list(self) -> dict[str, Entry]:
        """Every entry beat runs: the configured ones and the stored ones."""
        self.app.finalize()
        return {**entries_from_state(self.state, self.app), **entries_from_conf(self.app)}

    def close(self) -> None:
        self.state.close()
