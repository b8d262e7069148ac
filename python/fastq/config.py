"""Settings, under Celery's names where the concept is the same.

``Config`` is a mapping with attribute access that refuses unknown names (with a suggestion), so a
typo such as ``task_acks_lat`` fails at start-up instead of being silently ignored. Every name of
Celery's configuration reference is accepted: the ones fastq implements take effect, the others
warn once (``IgnoredSettingWarning``) when set to anything but Celery's default, saying why they
have no effect, and the few that would make fastq talk to another server are refused. Celery's
old upper-case names (``BROKER_URL``, ``CELERYD_CONCURRENCY``) are read as their new names.
"""

from __future__ import annotations

import difflib
import importlib
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from datetime import datetime, timedelta, tzinfo
from datetime import timezone as dt_timezone
from typing import Any

from fastq.celery_settings import CELERY_DEFAULTS, OLD_NAMES
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


def _broker_url(value: Any) -> str | None:
    """One URL, or Celery's list of a cluster's nodes: a list, or one ``;``-separated string
    (what the list becomes)."""
    if isinstance(value, (list, tuple)):
        return ";".join(_str(v) for v in value)
    return _opt_str(value)


#: ``broker_failover_strategy``: kombu's names (None: the first).
FAILOVER_STRATEGIES = ("round-robin", "shuffle")


def _failover(value: Any) -> str | None:
    if value is None or value in FAILOVER_STRATEGIES:
        return value
    raise ValueError(
        f"fastq takes {' or '.join(repr(s) for s in FAILOVER_STRATEGIES)} (a function, as "
        "kombu allows, is not supported: the Rust consumer and publisher pick the next broker)"
    )


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


def _retry_policy(value: Any) -> dict[str, Any]:
    """A publish retry policy, its keys checked when it is set rather than at an outage."""
    from fastq.publish_retry import RetryPolicy

    policy = _dict(value)
    RetryPolicy.of(policy)
    return policy


def _opt_bool(value: Any) -> bool | None:
    return None if value is None else _bool(value)


def _any(value: Any) -> Any:
    return value


def _timezone(value: Any) -> str | None:
    if value is None:
        return None
    name = _str(value)
    try:
        zone_info(name)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"unknown time zone ({exc})") from None
    return name


def zone_info(name: str) -> tzinfo:
    """The ``tzinfo`` of an IANA time zone name (``timezone`` setting)."""
    if name.upper() == "UTC":
        return dt_timezone.utc
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        raise KeyError(name) from None


def app_timezone(conf: Mapping[str, Any]) -> tzinfo:
    """The app's time zone, as Celery's: ``timezone`` if set, else UTC with ``enable_utc``
    (the default), else the machine's local time zone. Countdowns become ETAs and results get
    their ``date_done`` in it."""
    if conf["timezone"]:
        return zone_info(conf["timezone"])
    if conf["enable_utc"]:
        return dt_timezone.utc
    local = datetime.now().astimezone().tzinfo
    return local or dt_timezone.utc


def _protocol(value: Any) -> int:
    if _int(value) != 2:
        raise ValueError("fastq speaks Celery's task protocol 2 only (Celery's default since 4.0)")
    return 2


def _rate(value: Any) -> str | float | None:
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise TypeError('expected a rate such as "100/s", "10/m" or a number per second')


#: name -> (default, validator). Defaults follow Celery's.
SETTINGS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "broker_url": (None, _broker_url),
    "broker_failover_strategy": (None, _failover),
    "broker_transport_options": ({}, _dict),
    "broker_connection_retry": (True, _bool),
    "broker_connection_max_retries": (None, _opt_int),
    "broker_connection_retry_on_startup": (None, _opt_bool),
    "broker_pool_limit": (10, _opt_int),
    "broker_heartbeat": (120.0, _seconds),
    "broker_use_ssl": (None, _any),
    "broker_confirm_publish": (True, _bool),
    "result_backend": (None, _opt_str),
    "result_backend_transport_options": ({}, _dict),
    "redis_socket_timeout": (120.0, _seconds),
    "redis_socket_connect_timeout": (None, _seconds),
    "redis_socket_keepalive": (False, _bool),
    "redis_retry_on_timeout": (False, _bool),
    "redis_max_connections": (None, _opt_int),
    "result_serializer": ("json", _str),
    "result_accept_content": (None, _opt_str_list),
    "result_expires": (86400.0, _seconds),
    "result_persistent": (None, _opt_bool),
    "result_extended": (False, _bool),
    "result_chord_ordered": (True, _bool),
    "task_serializer": ("json", _str),
    "task_compression": (None, _opt_str),
    "accept_content": (["json"], _str_list),
    "task_default_queue": ("celery", _str),
    "task_default_exchange": (None, _opt_str),
    "task_default_exchange_type": ("direct", _str),
    "task_default_routing_key": (None, _opt_str),
    "task_default_priority": (None, _opt_int),
    "task_inherit_parent_priority": (False, _bool),
    "task_default_delivery_mode": (2, _int),
    "task_queues": (None, _any),
    "task_routes": (None, _any),
    "task_create_missing_queues": (True, _bool),
    "task_queue_max_priority": (None, _opt_int),
    "task_default_queue_type": ("classic", _str),
    "task_acks_late": (False, _bool),
    "task_acks_on_failure_or_timeout": (True, _bool),
    "task_reject_on_worker_lost": (None, _opt_bool),
    "task_ignore_result": (False, _bool),
    "task_store_errors_even_if_ignored": (False, _bool),
    "task_track_started": (False, _bool),
    "task_time_limit": (None, _seconds),
    "task_soft_time_limit": (None, _seconds),
    "task_default_rate_limit": (None, _rate),
    "task_annotations": (None, _any),
    "task_always_eager": (False, _bool),
    "task_eager_propagates": (False, _bool),
    "task_store_eager_result": (False, _bool),
    "task_publish_retry": (True, _bool),
    "task_publish_retry_policy": (CELERY_DEFAULTS["task_publish_retry_policy"], _retry_policy),
    "task_send_sent_event": (False, _bool),
    "event_exchange": ("celeryev", _str),
    "task_protocol": (2, _protocol),
    "worker_concurrency": (None, _opt_int),
    "worker_prefetch_multiplier": (4, _int),
    "worker_max_tasks_per_child": (None, _opt_int),
    "worker_max_memory_per_child": (None, _opt_int),
    "worker_pool": ("prefork", _str),
    "worker_hostname": (None, _opt_str),
    "worker_send_task_events": (False, _bool),
    "worker_hijack_root_logger": (True, _bool),
    "worker_redirect_stdouts": (True, _bool),
    "worker_redirect_stdouts_level": ("WARNING", _str),
    "worker_log_format": (CELERY_DEFAULTS["worker_log_format"], _str),
    "worker_log_datefmt": (None, _opt_str),
    "worker_task_log_format": (CELERY_DEFAULTS["worker_task_log_format"], _str),
    "worker_task_log_datefmt": (None, _opt_str),
    "worker_restore_interval": (10.0, _seconds),
    "worker_disable_rate_limits": (False, _bool),
    "worker_enable_remote_control": (True, _bool),
    # fastq's own: a Prometheus endpoint on this port (``--metrics-port``), and OpenTelemetry
    # spans of publishes and task runs (docs/operations.md).
    "worker_metrics_port": (None, _opt_int),
    "worker_cpu_affinity": (False, _bool),
    "task_tracing": (False, _bool),
    "enable_utc": (True, _bool),
    "timezone": (None, _timezone),
    "imports": ((), _str_list),
    "include": ((), _str_list),
}

# -- periodic tasks (fastq beat, docs/periodic-tasks.md) ----------------------------------------


def _catch_up(value: Any) -> str:
    if value not in ("once", "skip"):
        raise ValueError('expected "once" (run a missed entry once, as Celery) or "skip"')
    return str(value)


def _loop_interval(value: Any) -> float:
    return 300.0 if value in (0, None) else _positive_seconds(value)


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
        # Celery's default is 0, "the scheduler's own" (300 s here).
        "beat_max_loop_interval": (300.0, _loop_interval),
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

#: The rest of Celery's settings, accepted with Celery's default (what each does in fastq: below).
for _name, _default in CELERY_DEFAULTS.items():
    SETTINGS.setdefault(_name, (_default, _any))

_BACKENDS = "redis://, rpc://, rabbitmq://, sqlite:// and cache+memory://"
_NO_BACKEND = f"configures a Celery result backend fastq does not have (fastq's: {_BACKENDS})"
_NO_RECEIVER = "fastq has no event receiver: it applies to Celery's (celery events, Flower)"

#: Settings fastq accepts that have no effect in fastq, and why: set to anything but their default
#: they warn once. Prefixes name whole groups (``cassandra_``).
NO_EFFECT: dict[str, str] = {
    **dict.fromkeys(
        (
            "arangodb_",
            "azureblockblob_",
            "cache_",
            "cassandra_",
            "cosmosdbsql_",
            "couchbase_",
            "database_",
            "elasticsearch_",
            "gcs_",
            "mongodb_",
            "s3_",
        ),
        _NO_BACKEND,
    ),
    **dict.fromkeys(
        (
            "redis_backend_use_ssl",
            "redis_db",
            "redis_host",
            "redis_password",
            "redis_port",
            "redis_username",
        ),
        "fastq's Redis backend takes its server, database and TLS options from the "
        "result_backend URL (redis://user:password@host:port/db, rediss://...)",
    ),
    "beat_enable_remote_control": "fastq beat answers no remote control commands",
    "beat_remote_control_max_tick_age": "fastq beat answers no remote control commands",
    **dict.fromkeys(
        (
            "event_queue_durable",
            "event_queue_exclusive",
            "event_queue_expires",
            "event_queue_prefix",
            "event_queue_ttl",
        ),
        _NO_RECEIVER,
    ),
    "event_serializer": "fastq sends events as JSON (Celery's default)",
    "security_": "fastq does not sign messages (Celery's 'auth' serializer)",
    "control_": "fastq's remote control uses Celery's pidbox with its defaults (control_exchange "
    "'celery', queues expiring after 10 s, messages after 300 s, exclusive)",
    "broker_connection_timeout": "fastq's connect timeouts are its own",
    "broker_channel_error_retry": "fastq's worker treats a channel error as a connection loss "
    "(broker_connection_retry)",
    "broker_heartbeat_checkrate": "fastq checks AMQP heartbeats in its own client",
    "broker_login_method": "fastq logs in with the user and password of broker_url",
    "broker_native_delayed_delivery_queue_type": "fastq keeps ETA tasks without RabbitMQ's "
    "delayed delivery exchanges",
    "broker_pool_limit": "fastq's broker connections are not a pool of a set size",
    "broker_pool_acquire_timeout": "fastq's broker connections are not a pool of a set size",
    "result_backend_always_retry": "fastq's worker keeps results and retries storing them until "
    "the backend answers",
    "result_backend_base_sleep_between_retries_ms": "fastq's worker retries storing results on "
    "its own schedule",
    "result_backend_max_retries": "fastq's worker retries storing results until the backend "
    "answers",
    "result_backend_max_sleep_between_retries_ms": "fastq's worker retries storing results on "
    "its own schedule",
    "result_cache_max": "fastq does not cache results on the client",
    "result_chord_expires": "fastq's chords expire with result_expires",
    "result_chord_join_timeout": "fastq's chord counter needs no join",
    "result_chord_retry_interval": "fastq's chord counter needs no polling",
    "result_compression": "fastq stores results uncompressed",
    "result_exchange": "fastq's rpc:// and rabbitmq:// backends use their own reply queues",
    "result_exchange_type": "fastq's rpc:// and rabbitmq:// backends use their own reply queues",
    "result_failure_expires": "fastq's failures expire with result_expires",
    "task_acks_on_failure": "use task_acks_on_failure_or_timeout",
    "task_acks_on_timeout": "use task_acks_on_failure_or_timeout",
    "task_allow_error_cb_on_chord_header": "fastq has no such option for a chord's header",
    "task_create_missing_queue_exchange_type": "fastq declares missing queues on "
    "task_default_exchange_type",
    "task_create_missing_queue_type": "fastq declares missing queues as task_default_queue_type",
    "task_remote_tracebacks": "fastq does not rebuild remote tracebacks (the result holds the "
    "traceback as text)",
    "task_repr_maxlevels": "fastq shortens argsrepr/kwargsrepr by length only",
    "task_retry_on_worker_lost": "fastq returns a late-acknowledged task whose child died to its "
    "queue to run again",
    "worker_agent": "fastq's worker has no agent",
    "worker_autoscaler": "fastq's worker runs a fixed pool (worker_concurrency)",
    "worker_cancel_long_running_tasks_on_connection_loss": "fastq's worker never cancels a "
    "running task on a connection loss (a late-acknowledged one's lease is renewed)",
    "worker_consumer": "fastq's consumer is built in",
    "worker_deduplicate_successful_tasks": "fastq does not check for duplicate deliveries",
    "worker_detect_quorum_queues": "fastq always detects quorum queues (x-queue-type in "
    "task_queues' arguments or task_default_queue_type) and gives them per-consumer QoS: "
    "RabbitMQ refuses global QoS on them",
    "worker_direct": "fastq's worker consumes no per-worker direct queue",
    "worker_disable_prefetch": "fastq's prefetch window is worker_prefetch_multiplier",
    "worker_enable_prefetch_count_reduction": "fastq's prefetch window is "
    "worker_prefetch_multiplier",
    "worker_enable_soft_shutdown_on_idle": "fastq's worker stops warm (finishing its tasks)",
    "worker_eta_task_limit": "fastq has no limit on the ETA tasks a worker holds",
    "worker_log_color": "fastq's worker does not color its log",
    "worker_lost_wait": "fastq's supervisor records a dead child's task at once",
    "worker_pool_putlocks": "fastq's pool children fetch their own tasks",
    "worker_pool_restarts": "fastq's pool cannot be restarted remotely",
    "worker_pool_start_method": "fastq's pool forks",
    "worker_proc_alive_timeout": "fastq's supervisor waits for its children by itself",
    "worker_soft_shutdown_timeout": "fastq's worker stops warm (finishing its tasks)",
    "worker_state_db": "fastq's worker keeps revoked ids in memory only",
    "worker_timer": "fastq's timer is built in",
    "worker_timer_precision": "fastq's timer is built in",
}
#: Settings whose value fastq refuses: ignoring them would send tasks to another server.
REFUSED: dict[str, str] = {
    **dict.fromkeys(
        ("broker_host", "broker_port", "broker_user", "broker_password", "broker_vhost"),
        "give the broker as one URL: broker_url = 'amqp://user:password@host:port/vhost'",
    ),
    "broker_transport": "give the transport as broker_url's scheme (redis://, amqp://)",
    "broker_read_url": "fastq reads and writes through broker_url",
    "broker_write_url": "fastq reads and writes through broker_url",
}


def no_effect_reason(name: str) -> str | None:
    """Why the setting ``name`` has no effect in fastq, or ``None`` if it takes effect."""
    if name in NO_EFFECT:
        return NO_EFFECT[name]
    for prefix, reason in NO_EFFECT.items():
        if prefix.endswith("_") and name.startswith(prefix):
            return reason
    return None


class IgnoredSettingWarning(UserWarning):
    """A setting of Celery's was given a value that has no effect in fastq."""


#: Settings read from the environment when they were not given in code.
ENVIRONMENT = {"broker_url": "FASTQ_BROKER_URL", "result_backend": "FASTQ_RESULT_BACKEND"}
#: Celery's variables: as in Celery, they win over the configuration (and the FASTQ_ ones).
CELERY_ENVIRONMENT = {"broker_url": "CELERY_BROKER_URL", "result_backend": "CELERY_RESULT_BACKEND"}


class Config(MutableMapping[str, Any]):
    """The app's settings: ``app.conf.task_acks_late = True`` or ``app.conf.update(...)``."""

    def __init__(self, **settings: Any) -> None:
        object.__setattr__(self, "_values", {k: _copy(d) for k, (d, _) in SETTINGS.items()})
        object.__setattr__(self, "_warned", set())
        #: The settings given a value (by the app, the environment or a config object), as
        #: opposed to left at their default: some defaults adapt (``is_set``).
        object.__setattr__(self, "_given", set())
        #: Called with a setting's name after it is set (the app re-annotates its tasks).
        object.__setattr__(self, "_on_change", None)
        #: Counts the settings set or reset, so a reader may keep what it derived from them.
        object.__setattr__(self, "version", 0)
        for name, env in ENVIRONMENT.items():
            if os.environ.get(env):
                self._values[name] = os.environ[env]
                self._given.add(name)
        for name, value in self._values.items():
            self._mirror(name, value)
        self.update(settings)

    def _mirror(self, name: str, value: Any) -> None:
        """Keeps ``value`` as an instance attribute too: ``conf.task_acks_late`` is then read
        without calling ``__getattr__`` (~0.6 µs), and the worker reads several per task. The
        two read from the environment at each access are left to ``__getattr__``."""
        if name not in CELERY_ENVIRONMENT:
            self.__dict__[name] = value

    def on_change(self, callback: Callable[[str], None]) -> None:
        """Calls ``callback(name)`` after each setting is set."""
        object.__setattr__(self, "_on_change", callback)

    def __getitem__(self, name: str) -> Any:
        name = self._check(name)
        if name in CELERY_ENVIRONMENT:
            return self._from_celery_environment(name)
        return self._values[name]

    def _from_celery_environment(self, name: str) -> Any:
        if name == "broker_url":
            for env in ("CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL"):
                if os.environ.get(env):
                    raise ConfigurationError(
                        f"environment variable {env} is set: fastq reads and writes through "
                        "one broker URL (broker_url, or CELERY_BROKER_URL)"
                    )
        return os.environ.get(CELERY_ENVIRONMENT[name]) or self._values[name]

    def __setitem__(self, name: str, value: Any) -> None:
        name = self._check(name)
        default, validate = SETTINGS[name]
        try:
            value = validate(value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"setting {name!r} = {value!r}: {exc}") from None
        if name in REFUSED and value != default:
            raise ConfigurationError(f"setting {name!r} is not supported: {REFUSED[name]}")
        self._values[name] = value
        self._mirror(name, value)
        self._given.add(name)
        object.__setattr__(self, "version", self.version + 1)
        if self._on_change is not None:
            self._on_change(name)
        if value != default:
            reason = no_effect_reason(name)
            if reason is not None and name not in self._warned:
                self._warned.add(name)
                warnings.warn(
                    f"setting {name!r} has no effect in fastq: {reason}",
                    IgnoredSettingWarning,
                    stacklevel=3,
                )

    def __delitem__(self, name: str) -> None:
        name = self._check(name)
        self._values[name] = value = _copy(SETTINGS[name][0])
        self._mirror(name, value)
        self._given.discard(name)
        object.__setattr__(self, "version", self.version + 1)

    def is_set(self, name: str) -> bool:
        """Whether ``name`` was given a value (even its default's), not left at its default."""
        return self._check(name) in self._given

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in CELERY_ENVIRONMENT:
            return self._from_celery_environment(name)
        try:
            return self[name]  # an old or upper-case name (the current ones are attributes)
        except ConfigurationError as exc:
            raise AttributeError(str(exc)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def _check(self, name: str) -> str:
        if name in SETTINGS:
            return name
        if name in OLD_NAMES:
            return OLD_NAMES[name]
        lowered = name.lower()
        if lowered in SETTINGS:
            return lowered
        raise ConfigurationError(f"unknown setting {name!r}{_suggestion(lowered)}")

    def from_object(self, obj: object | str, namespace: str | None = None) -> None:
        """Reads the settings of ``obj`` (a mapping, an object, or the module named ``obj``), as
        Celery does: the lower-case names; Celery's old upper-case names (``BROKER_URL``), which
        may not be mixed with new ones; with a ``namespace`` (``"CELERY"``), the names under it
        (``CELERY_BROKER_URL``) first."""
        if isinstance(obj, str):
            module, _, attr = obj.partition(":")
            obj = importlib.import_module(module)
            if attr:
                obj = getattr(obj, attr)
        found: dict[str, Any] = {}
        names = list(obj) if isinstance(obj, Mapping) else dir(obj)
        for name in names:
            if name.startswith("_"):
                continue
            value = obj[name] if isinstance(obj, Mapping) else getattr(obj, name)
            if isinstance(value, type(importlib)):  # modules imported by the config module
                continue
            if name.islower() and callable(value) and not isinstance(value, type):
                if name not in SETTINGS:
                    continue  # functions of the config module
            found[name] = value
        for name, value in _read_settings(found, namespace).items():
            self[name] = value

    def __repr__(self) -> str:
        changed = {k: v for k, v in self._values.items() if v != SETTINGS[k][0]}
        return f"<Config {changed}>"


# A setting named as one of Config's methods, or as its ``version`` counter, would be hidden by
# (or overwrite) it once mirrored (``_mirror``).
_SHADOWING = [name for name in SETTINGS if hasattr(Config, name) or name == "version"]
if _SHADOWING:
    raise RuntimeError(f"settings named as Config's methods: {_SHADOWING}")


def _suggestion(name: str) -> str:
    close = difflib.get_close_matches(name, SETTINGS, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _read_settings(found: Mapping[str, Any], namespace: str | None) -> dict[str, Any]:
    """The settings among an object's attributes ``found``, by their new names."""
    if namespace:
        return _read_namespaced(found, namespace.rstrip("_") + "_")
    new = {name: v for name, v in found.items() if name.islower()}
    for name in new:
        if name not in SETTINGS:
            raise ConfigurationError(f"unknown setting {name!r}{_suggestion(name)}")
    old = {name: v for name, v in found.items() if name in OLD_NAMES}
    for name in found.keys() - new.keys() - old.keys():
        lowered = name.lower()
        stripped = lowered.split("_", 1)[-1]
        if lowered in SETTINGS:
            raise ConfigurationError(
                f"setting {name!r}: setting names are lower-case ({lowered!r}), or Celery's old "
                "upper-case names"
            )
        if name.startswith("CELERY_") and stripped in SETTINGS:
            raise ConfigurationError(
                f"setting {name!r} is namespaced: read it with "
                "config_from_object(obj, namespace='CELERY'), or name it "
                f"{stripped!r}"
            )
    mixed = sorted(name for name in old if OLD_NAMES[name] not in new)
    if new and mixed:
        renames = ", ".join(f"{name} -> {OLD_NAMES[name]}" for name in mixed)
        raise ConfigurationError(
            f"cannot mix Celery's old upper-case setting names with new ones; rename: {renames}"
        )
    settings = _time_zone(found)
    settings.update({OLD_NAMES[name]: v for name, v in old.items()})
    settings.update(new)  # a setting given under both names: the new one
    return settings


def _time_zone(found: Mapping[str, Any]) -> dict[str, Any]:
    """Django's ``TIME_ZONE``, read for ``timezone`` (when no other name gives it) as Celery."""
    return {"timezone": found["TIME_ZONE"]} if "TIME_ZONE" in found else {}


def _read_namespaced(found: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Celery's order under a namespace: ``<NS>_<NAME>``, then ``name``, then the old name (and
    Django's ``TIME_ZONE`` for ``timezone``)."""
    settings = _time_zone(found)
    settings.update({OLD_NAMES[n]: v for n, v in found.items() if n in OLD_NAMES})
    settings.update({n: v for n, v in found.items() if n.islower() and n in SETTINGS})
    upper = prefix.isupper()
    for name, value in found.items():
        if not name.startswith(prefix) or name.isupper() != upper:
            continue
        key = name[len(prefix) :].lower()
        if key in SETTINGS:
            settings[key] = value
        elif name not in OLD_NAMES:
            raise ConfigurationError(
                f"unknown setting {name!r}{_suggestion(key)} (namespace {prefix[:-1]!r})"
            )
    return settings


def resolve_annotations(annotations: Any, task: Any) -> list[dict[str, Any]]:
    """The attribute maps ``task_annotations`` gives ``task``, in the order Celery applies
    them: the first entry with one for the task's name (or whose ``annotate(task)`` answers),
    then the first with one for every task (``'*'``, or ``annotate_any()``). ``annotations``: a
    dict, an object with ``annotate``, the dotted name of a class of those, or a list of them."""
    if annotations is None:
        return []
    entries = annotations if isinstance(annotations, (list, tuple)) else [annotations]
    found = []
    for method in ("annotate", "annotate_any"):
        for entry in entries:
            answer = _annotation(entry, method, task)
            if answer is not None:
                found.append(dict(answer))
                break
    return found


def _annotation(entry: Any, method: str, task: Any) -> Any:
    if isinstance(entry, Mapping):
        return entry.get(task.name if method == "annotate" else "*")
    if isinstance(entry, str):
        module, _, attr = entry.replace(":", ".").rpartition(".")
        entry = getattr(importlib.import_module(module), attr)()
    answer = getattr(entry, method, None)
    if answer is None:
        return None
    return answer(task) if method == "annotate" else answer()


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value
