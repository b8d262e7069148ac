"""Settings, under Celery's names where the concept is the same.

``Config`` is a mapping with attribute access that refuses unknown names (with a suggestion), so a
typo such as ``task_acks_lat`` fails at start-up instead of being silently ignored.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from datetime import timedelta
from typing import Any

from fastq.errors import ConfigurationError

#: The broker used when none is configured: the embedded SQLite broker, in ``fastq.db`` in the
#: working directory (so a client and its workers started in the same directory share it).
DEFAULT_BROKER_URL = "sqlite:///fastq.db"


def default_result_backend(broker_url: str) -> str | None:
    """The backend used when none is set: the broker's own file/store for the embedded brokers
    (one file to manage), none otherwise."""
    scheme = broker_url.split("://", 1)[0].lower()
    return broker_url if scheme in ("sqlite", "memory") else None


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TypeError("expected seconds (int/float) or a timedelta")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    ):
        return value.lower() in ("1", "true", "yes", "on")
    raise TypeError("expected a boolean")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    return value


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TypeError("expected a list of strings")


def _opt_str_list(value: Any) -> list[str] | None:
    return None if value is None else _str_list(value)


def _dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError("expected a dict")
    return dict(value)


def _any(value: Any) -> Any:
    return value


def _rate(value: Any) -> str | float | None:
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise TypeError('expected a rate such as "100/s", "10/m" or a number per second')


#: name -> (default, validator). Defaults follow Celery's.
SETTINGS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "broker_url": (None, _opt_str),
    "broker_transport_options": ({}, _dict),
    "broker_connection_retry": (True, _bool),
    "broker_connection_max_retries": (None, _opt_int),
    "broker_pool_limit": (10, _opt_int),
    "broker_heartbeat": (120.0, _seconds),
    "broker_use_ssl": (None, _any),
    "broker_confirm_publish": (True, _bool),
    "result_backend": (None, _opt_str),
    "result_backend_transport_options": ({}, _dict),
    "result_serializer": ("json", _str),
    "result_accept_content": (None, _opt_str_list),
    "result_expires": (86400.0, _seconds),
    "result_persistent": (False, _bool),
    "result_extended": (False, _bool),
    "result_chord_ordered": (True, _bool),
    "task_serializer": ("json", _str),
    "accept_content": (["json"], _str_list),
    "task_default_queue": ("celery", _str),
    "task_default_exchange": (None, _opt_str),
    "task_default_exchange_type": ("direct", _str),
    "task_default_routing_key": (None, _opt_str),
    "task_default_priority": (None, _opt_int),
    "task_default_delivery_mode": (2, _int),
    "task_queues": (None, _any),
    "task_routes": (None, _any),
    "task_create_missing_queues": (True, _bool),
    "task_queue_max_priority": (None, _opt_int),
    "task_default_queue_type": ("classic", _str),
    "task_acks_late": (False, _bool),
    "task_acks_on_failure_or_timeout": (True, _bool),
    "task_reject_on_worker_lost": (False, _bool),
    "task_ignore_result": (False, _bool),
    "task_store_errors_even_if_ignored": (False, _bool),
    "task_track_started": (False, _bool),
    "task_time_limit": (None, _seconds),
    "task_soft_time_limit": (None, _seconds),
    "task_default_rate_limit": (None, _rate),
    "task_annotations": (None, _any),
    "task_always_eager": (False, _bool),
    "task_eager_propagates": (False, _bool),
    "task_publish_retry": (True, _bool),
    "task_send_sent_event": (False, _bool),
    "task_protocol": (2, _int),
    "worker_concurrency": (None, _opt_int),
    "worker_prefetch_multiplier": (4, _int),
    "worker_max_tasks_per_child": (None, _opt_int),
    "worker_pool": ("prefork", _str),
    "worker_hostname": (None, _opt_str),
    "worker_send_task_events": (False, _bool),
    "worker_hijack_root_logger": (True, _bool),
    "worker_restore_interval": (10.0, _seconds),
    "enable_utc": (True, _bool),
    "timezone": ("UTC", _str),
    "imports": ((), _str_list),
    "include": ((), _str_list),
}

# -- periodic tasks (fastq beat, docs/periodic-tasks.md) ----------------------------------------


def _catch_up(value: Any) -> str:
    if value not in ("once", "skip"):
        raise ValueError('expected "once" (run a missed entry once, as Celery) or "skip"')
    return str(value)


def _positive_seconds(value: Any) -> float:
    seconds = _seconds(value)
    if seconds is None or seconds <= 0:
        raise ValueError("expected a positive number of seconds")
    return seconds


SETTINGS.update(
    {
        "beat_schedule": ({}, _dict),
        # Only fastq's own scheduler (state on the broker); the default names Celery's class.
        "beat_scheduler": ("celery.beat:PersistentScheduler", _str),
        "beat_max_loop_interval": (300.0, _positive_seconds),
        # Celery's local state file and its sync interval: accepted, unused (state is on the
        # broker and written at every send).
        "beat_schedule_filename": ("celerybeat-schedule", _str),
        "beat_sync_every": (0, _int),
        # A crontab run missed by more than this many seconds is not caught up (None: always).
        "beat_cron_starting_deadline": (None, _seconds),
        # fastq's own: the leader lease of highly available beat, the catch-up policy after
        # downtime, and where state is kept when the broker cannot (RabbitMQ).
        "beat_lease_timeout": (10.0, _positive_seconds),
        "beat_catch_up": ("once", _catch_up),
        "beat_state_url": (None, _opt_str),
    }
)

#: Settings read from the environment when they were not given in code.
ENVIRONMENT = {"broker_url": "FASTQ_BROKER_URL", "result_backend": "FASTQ_RESULT_BACKEND"}


class Config(MutableMapping[str, Any]):
    """The app's settings: ``app.conf.task_acks_late = True`` or ``app.conf.update(...)``."""

    def __init__(self, **settings: Any) -> None:
        object.__setattr__(self, "_values", {k: _copy(d) for k, (d, _) in SETTINGS.items()})
        for name, env in ENVIRONMENT.items():
            if os.environ.get(env):
                self._values[name] = os.environ[env]
        self.update(settings)

    def __getitem__(self, name: str) -> Any:
        return self._values[self._check(name)]

    def __setitem__(self, name: str, value: Any) -> None:
        _, validate = SETTINGS[self._check(name)]
        try:
            self._values[name] = validate(value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"setting {name!r} = {value!r}: {exc}") from None

    def __delitem__(self, name: str) -> None:
        default, _ = SETTINGS[self._check(name)]
        self._values[name] = _copy(default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]  # the fast path: the worker reads settings per task
        except KeyError:
            pass
        try:
            return self[name]
        except ConfigurationError as exc:
            raise AttributeError(str(exc)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def _check(self, name: str) -> str:
        if name in SETTINGS:
            return name
        lowered = name.lower()
        if lowered in SETTINGS:
            return lowered
        close = difflib.get_close_matches(lowered, SETTINGS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigurationError(f"unknown setting {name!r}{hint}")

    def from_object(self, obj: object | str) -> None:
        """Reads the lower-case attributes of ``obj`` (or of the module named ``obj``)."""
        if isinstance(obj, str):
            module, _, attr = obj.partition(":")
            obj = importlib.import_module(module)
            if attr:
                obj = getattr(obj, attr)
        for name in dir(obj):
            if name.startswith("_") or not name.islower():
                continue
            value = getattr(obj, name)
            if callable(value) and not isinstance(value, type) and name not in SETTINGS:
                continue
            if isinstance(value, type(importlib)):  # modules imported by the config module
                continue
            self[name] = value

    def __repr__(self) -> str:
        changed = {k: v for k, v in self._values.items() if v != SETTINGS[k][0]}
        return f"<Config {changed}>"


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value
