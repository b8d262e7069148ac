"""Schedules of periodic tasks, with Celery's names and semantics: ``schedule`` (every N seconds)
and ``crontab`` (minute, hour, day_of_week, day_of_month, month_of_year).

A schedule answers two questions, as Celery's do: ``remaining_estimate(last_run_at)`` (how long
until the next run after ``last_run_at``; negative when overdue) and ``is_due(last_run_at)``
(``(is_due, seconds until the next check)``). Beat also asks ``next_run_after(last_run_at)``, the
instant itself. Naive datetimes are taken as UTC, as Celery takes them.

A crontab runs in its time zone: ``tz`` if given, else the app's ``timezone`` setting, else UTC.
Wall-clock times that do not exist (the hour skipped when clocks go forward) run once, as soon as
the clock has jumped (02:30 runs at 03:30 on a spring-forward day in Europe/Berlin); wall-clock
times that happen twice (the hour repeated when clocks go back) run once, the first time, unless
the entry runs every hour, in which case both hours run (as cron does).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from fastq.errors import ConfigurationError

__all__ = ["crontab", "crontab_parser", "maybe_schedule", "schedstate", "schedule", "solar"]

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


class schedstate(NamedTuple):
    """``is_due``'s answer: run now or not, and seconds until the schedule should be asked again."""

    is_due: bool
    next: float


class ParseException(ConfigurationError, ValueError):
    """A crontab field that cannot be parsed."""


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


def local_zone() -> tzinfo:
    """This machine's time zone: ``TZ``, else the zone ``/etc/localtime`` links to, else its
    current UTC offset (fixed: without the zone's name its DST rules are unknown)."""
    name = os.environ.get("TZ", "").lstrip(":")
    if not name:
        target = os.path.realpath("/etc/localtime")
        name = target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else ""
    try:
        return ZoneInfo(name) if name else _fixed_local()
    except (KeyError, ValueError, OSError):  # not a zone name (ZoneInfoNotFoundError: KeyError)
        return _fixed_local()


def _fixed_local() -> tzinfo:
    return datetime.now().astimezone().tzinfo or timezone.utc


class BaseSchedule:
    """What every schedule has: a clock (``nowfun``) and a time zone."""

    def __init__(
        self, nowfun: Callable[[], datetime] | None = None, app: Any = None, tz: Any = None
    ) -> None:
        self.nowfun = nowfun
        self.app = app
        self._tz = tz

    @property
    def tz(self) -> tzinfo:
        """``tz`` if given, else the app's ``timezone`` setting (with ``enable_utc = False`` and
        the default ``timezone``: the machine's zone, as Celery), else UTC."""
        tz = self._tz
        if tz is None and self.app is not None:
            conf = self.app.conf
            tz = getattr(conf, "timezone", None)
            if tz == "UTC" and getattr(conf, "enable_utc", True) is False:
                return local_zone()
        if tz is None:
            return timezone.utc
        return ZoneInfo(tz) if isinstance(tz, str) else tz

    @tz.setter
    def tz(self, value: Any) -> None:
        self._tz = value

    def now(self) -> datetime:
        return _aware(self.nowfun()) if self.nowfun is not None else datetime.now(self.tz)

    def next_run_after(self, last_run_at: datetime) -> datetime:
        """The first run strictly after ``last_run_at`` (an aware datetime)."""
        raise NotImplementedError

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """How long from now until the first run after ``last_run_at`` (negative if overdue)."""
        return self.next_run_after(_aware(last_run_at)) - self.now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        """``(True, seconds to the run after this one)`` when a run is due, else ``(False,
        seconds until it is)``."""
        remaining = self.remaining_estimate(last_run_at).total_seconds()
        if remaining > 0:
            return schedstate(False, remaining)
        return schedstate(True, max(self.remaining_estimate(self.now()).total_seconds(), 0.0))


class schedule(BaseSchedule):
    """Every ``run_every`` (seconds or a ``timedelta``) after the last run."""

    def __init__(
        self,
        run_every: float | timedelta | None = None,
        relative: bool = False,
        nowfun: Callable[[], datetime] | None = None,
        app: Any = None,
    ) -> None:
        if relative:
            raise ConfigurationError(
                "schedule(relative=True) is not supported; use a crontab for runs on the clock"
            )
        if run_every is None:
            raise ConfigurationError("schedule() needs run_every (seconds or a timedelta)")
        self.run_every = (
            run_every if isinstance(run_every, timedelta) else timedelta(seconds=float(run_every))
        )
        if self.run_every <= timedelta(0):
            raise ConfigurationError(f"schedule run_every must be positive, got {run_every!r}")
        super().__init__(nowfun=nowfun, app=app)

    @property
    def seconds(self) -> float:
        return self.run_every.total_seconds()

    def next_run_after(self, last_run_at: datetime) -> datetime:
        return _aware(last_run_at) + self.run_every

    def __repr__(self) -> str:
        return f"<freq: {self.run_every}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, schedule) and other.run_every == self.run_every

    def __hash__(self) -> int:
        return hash(self.run_every)


class crontab_parser:
    """Parses one crontab field: ``*``, ``*/15``, ``1-5``, ``mon-fri``, ``1,15,30-45/5``; a
    range whose end is below its start wraps around (``fri-mon``)."""

    _patterns = (
        (re.compile(r"(\w+?)-(\w+)/(\w+)?"), "range_steps"),
        (re.compile(r"(\w+?)-(\w+)"), "range"),
        (re.compile(r"\*/(\w+)?"), "star_steps"),
        (re.compile(r"^\*$"), "star"),
    )

    def __init__(self, max_: int = 60, min_: int = 0) -> None:
        self.max_ = max_
        self.min_ = min_

    def parse(self, spec: str) -> set[int]:
        values: set[int] = set()
        for part in spec.split(","):
            if not part:
                raise ParseException(f"crontab field {spec!r}: empty part")
            values.update(self._part(part))
        return values

    def _part(self, part: str) -> list[int]:
        for regex, kind in self._patterns:
            m = regex.match(part)
            if not m:
                continue
            if kind == "range_steps":
                return self._range(m.group(1), m.group(2))[:: self._step(m.group(3), part)]
            if kind == "range":
                return self._range(m.group(1), m.group(2))
            if kind == "star_steps":
                return self._star()[:: self._step(m.group(1), part)]
            return self._star()
        return [self._number(part)]

    def _step(self, text: str | None, part: str) -> int:
        if not text or not text.isdigit() or int(text) == 0:
            raise ParseException(f"crontab field {part!r}: the step must be a positive number")
        return int(text)

    def _star(self) -> list[int]:
        return list(range(self.min_, self.max_ + self.min_))

    def _range(self, start: str, end: str) -> list[int]:
        first, last = self._number(start), self._number(end)
        if last < first:  # wraps around the end of the field
            return [*range(first, self.min_ + self.max_), *range(self.min_, last + 1)]
        return list(range(first, last + 1))

    def _number(self, text: str) -> int:
        if text.startswith("-"):
            raise ParseException(f"crontab field {text!r}: negative numbers are not supported")
        if text.isdigit():
            value = int(text)
        else:
            name = text[:3].lower()
            if name in MONTH_NAMES:
                value = MONTH_NAMES.index(name) + 1
            elif name in DAY_NAMES:
                value = DAY_NAMES.index(name)
            else:
                raise ParseException(f"crontab field: {text!r} is not a number, day or month")
        highest = self.min_ + self.max_ - 1
        if not self.min_ <= value <= highest:
            raise ParseException(f"crontab field: {value} is out of range {self.min_}-{highest}")
        return value


def _expand(spec: Any, max_: int, min_: int = 0) -> frozenset[int]:
    if isinstance(spec, bool):
        raise ConfigurationError(f"crontab field {spec!r} is not a cron spec")
    if isinstance(spec, int):
        values = {spec}
    elif isinstance(spec, str):
        values = crontab_parser(max_, min_).parse(spec)
    elif isinstance(spec, Iterable):
        values = set(spec)
    else:
        raise ConfigurationError(f"crontab field {spec!r}: expected an int, a string or a set")
    for value in values:
        if not isinstance(value, int) or not min_ <= value < max_ + min_:
            raise ConfigurationError(
                f"crontab field value {value!r} is out of range {min_}-{max_ + min_ - 1}"
            )
    return frozenset(values)


#: How far ahead a crontab is searched for its next run (a 29 February that is also a given
#: weekday comes round every 28 years).
_SEARCH_YEARS = 30


class crontab(BaseSchedule):
    """Runs when the clock matches every field, as Celery's ``crontab``: ``crontab(minute=0,
    hour="*/3")``, ``crontab(hour=7, minute=30, day_of_week="mon-fri")``. ``day_of_week`` counts
    from Sunday = 0; a day must match ``day_of_week``, ``day_of_month`` and ``month_of_year``
    alike (Celery's rule, not cron's "either day field")."""

    def __init__(
        self,
        minute: Any = "*",
        hour: Any = "*",
        day_of_week: Any = "*",
        day_of_month: Any = "*",
        month_of_year: Any = "*",
        nowfun: Callable[[], datetime] | None = None,
        app: Any = None,
        tz: Any = None,
    ) -> None:
        super().__init__(nowfun=nowfun, app=app, tz=tz)
        self._orig = (minute, hour, day_of_week, day_of_month, month_of_year)
        self.minute = _expand(minute, 60)
        self.hour = _expand(hour, 24)
        self.day_of_week = _expand(day_of_week, 7)
        self.day_of_month = _expand(day_of_month, 31, 1)
        self.month_of_year = _expand(month_of_year, 12, 1)
        self._minutes = sorted(self.minute)
        self._hours = sorted(self.hour)
        self._every_hour = len(self.hour) == 24

    @classmethod
    def from_string(cls, text: str) -> crontab:
        """``crontab.from_string("*/5 9-17 * * mon-fri")``: minute hour day-of-month month
        day-of-week, as in a crontab file."""
        fields = text.split()
        if len(fields) != 5:
            raise ConfigurationError(f"a crontab line has 5 fields, got {text!r}")
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        return cls(minute, hour, day_of_week, day_of_month, month_of_year)

    def __repr__(self) -> str:
        m, h, dw, dm, my = self._orig
        return f"<crontab: {m} {h} {dm} {my} {dw} (m/h/dM/MY/d)>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and (
            self.minute,
            self.hour,
            self.day_of_week,
            self.day_of_month,
            self.month_of_year,
        ) == (other.minute, other.hour, other.day_of_week, other.day_of_month, other.month_of_year)

    def __hash__(self) -> int:
        return hash((self.minute, self.hour, self.day_of_week, self.day_of_month))

    def _day_matches(self, day: date) -> bool:
        return (
            day.month in self.month_of_year
            and day.day in self.day_of_month
            and day.isoweekday() % 7 in self.day_of_week
        )

    def _runs_on(self, day: date, tz: tzinfo, not_before: datetime) -> list[datetime]:
        """The day's runs in UTC, in order, leaving out wall times well before ``not_before``
        (a local naive datetime): they cannot be after it, however the clocks moved."""
        runs = []
        for hour in self._hours:
            for minute in self._minutes:
                wall = datetime(day.year, day.month, day.day, hour, minute)
                if wall < not_before:
                    continue
                first = wall.replace(tzinfo=tz, fold=0)
                second = wall.replace(tzinfo=tz, fold=1)
                if first.utcoffset() == second.utcoffset():
                    runs.append(first.astimezone(timezone.utc))
                elif first.astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None) == wall:
                    # Happens twice (clocks went back): once, or in both hours for hourly runs.
                    runs.append(first.astimezone(timezone.utc))
                    if self._every_hour:
                        runs.append(second.astimezone(timezone.utc))
                elif not self._every_hour:
                    # Skipped (clocks went forward): once, as the jump ends. fold=0 reads the
                    # wall time with the offset from before the jump, so it lands just after it.
                    runs.append(first.astimezone(timezone.utc))
        return sorted(runs)

    def next_run_after(self, last_run_at: datetime) -> datetime:
        tz = self.tz
        last = _aware(last_run_at).astimezone(timezone.utc)
        local = last.astimezone(tz).replace(tzinfo=None)
        # Runs shifted by a DST jump may land a few hours after their wall time.
        not_before = local - timedelta(hours=3)
        day = not_before.date()
        end = day + timedelta(days=366 * _SEARCH_YEARS)
        while day <= end:
            if day.month not in self.month_of_year:
                day = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
                continue
            if self._day_matches(day):
                for run in self._runs_on(day, tz, not_before):
                    if run > last:
                        return run.astimezone(tz)
            day += timedelta(days=1)
        raise ConfigurationError(f"{self!r} never runs (no date matches all of its fields)")


class solar(BaseSchedule):
    """Celery's sunrise/sunset schedule: not supported by fastq."""

    def __init__(self, event: str, lat: float, lon: float, **kwargs: Any) -> None:
        raise ConfigurationError(
            "fastq does not support solar schedules yet: use a crontab with the local time of "
            f"the {event!r} event (crontab(hour=..., minute=...), with the timezone setting), or "
            "run this entry from Celery's beat"
        )


def maybe_schedule(value: Any, app: Any = None) -> BaseSchedule:
    """A schedule from what a ``beat_schedule`` entry may hold: seconds, a ``timedelta``, or a
    schedule (given the app, for its time zone, unless it has one)."""
    if isinstance(value, BaseSchedule):
        if value.app is None and app is not None:
            value.app = app
        return value
    if isinstance(value, (int, float, timedelta)) and not isinstance(value, bool):
        return schedule(value, app=app)
    raise ConfigurationError(
        f"a schedule must be seconds, a timedelta, a crontab or a schedule; got {value!r}"
    )
