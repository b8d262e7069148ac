"""``fastq.schedules``: crontab fields and next runs compared with Celery's over a year of
instants, DST transitions, ``schedule``'s ``is_due``, and the refusals."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from fastq.errors import ConfigurationError
from fastq.schedules import crontab, maybe_schedule, schedule, solar

UTC = timezone.utc

SPECS = [
    {},
    {"minute": 0},
    {"minute": "*/15", "hour": "9-17", "day_of_week": "mon-fri"},
    {"minute": 30, "hour": 2},
    {"minute": 0, "hour": 0, "day_of_month": 1},
    {"minute": 5, "hour": "*/3", "day_of_month": "1-7", "day_of_week": "mon"},
    {"minute": 0, "hour": 12, "day_of_month": 29, "month_of_year": 2},
    {"minute": "0,30", "hour": "22-2", "day_of_week": "fri-mon"},
    {"minute": 59, "hour": 23, "day_of_month": 31},
    {"minute": 0, "hour": 7, "month_of_year": "jan,jul"},
    {"minute": {1, 2, 3}, "hour": [4, 5], "day_of_week": "sunday,sat"},
]


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin"])
def test_next_runs_match_celerys_over_a_year(tz: str) -> None:
    celery = pytest.importorskip("celery")
    from celery.schedules import crontab as celery_crontab

    app = celery.Celery(set_as_current=False)
    app.conf.timezone = tz
    zone = ZoneInfo(tz)
    rnd = random.Random(16)
    compared = 0
    for spec in SPECS:
        for _ in range(100):
            last = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rnd.randrange(366 * 86400))
            ours = crontab(**spec, nowfun=lambda last=last: last, tz=tz)
            mine = last + ours.remaining_estimate(last)
            # Celery's DST handling differs by design (see below): compare away from it.
            if tz != "UTC" and _near_transition(last, mine, zone):
                continue
            theirs = celery_crontab(**spec, nowfun=lambda last=last: last, app=app)
            assert mine == last + theirs.remaining_estimate(last), (spec, last)
            compared += 1
    assert compared > len(SPECS) * 60


def _near_transition(a: datetime, b: datetime, zone: ZoneInfo) -> bool:
    day = timedelta(hours=26)
    offsets = {t.astimezone(zone).utcoffset() for t in (a - day, a, a + day, b - day, b, b + day)}
    return len(offsets) > 1


def _runs(entry: crontab, start: datetime, end: datetime) -> list[datetime]:
    out, t = [], start
    while (t := entry.next_run_after(t)) <= end:
        out.append(t)
    return out


@pytest.mark.parametrize(
    ("zone", "spring", "fall"),
    [
        ("Europe/Berlin", (2026, 3, 29), (2026, 10, 25)),
        ("America/New_York", (2026, 3, 8), (2026, 11, 1)),
    ],
)
def test_a_daily_0230_runs_once_on_both_dst_days(zone: str, spring: tuple, fall: tuple) -> None:
    tz = ZoneInfo(zone)
    entry = crontab(minute=30, hour=2, tz=zone)
    for day in (spring, fall):
        start = datetime(*day, tzinfo=tz) - timedelta(days=1)
        runs = _runs(entry, start, start + timedelta(days=3))
        the_day = datetime(*day).date()
        one = timedelta(days=1)
        assert [r.astimezone(tz).date() for r in runs] == [the_day - one, the_day, the_day + one]
        on_the_day = runs[1].astimezone(tz)
        # Spring: no 02:30, it runs as the clock jumps (03:30); fall: at the first 02:30.
        assert (on_the_day.hour, on_the_day.minute) == ((3, 30) if day == spring else (2, 30))
        if day == fall:
            assert on_the_day.fold == 0


def test_an_hourly_entry_runs_every_real_hour_across_dst() -> None:
    tz = ZoneInfo("Europe/Berlin")
    hourly = crontab(minute=30, tz="Europe/Berlin")
    fall = _runs(
        hourly, datetime(2026, 10, 25, 0, 0, tzinfo=tz), datetime(2026, 10, 25, 5, 0, tzinfo=tz)
    )
    utc = [r.astimezone(UTC) for r in fall]  # same-zone datetimes subtract as wall times
    gaps = {b - a for a, b in itertools.pairwise(utc)}
    assert gaps == {timedelta(hours=1)} and len(fall) == 6  # 02:30 twice: 6 real hours
    spring = _runs(
        hourly, datetime(2026, 3, 29, 0, 0, tzinfo=tz), datetime(2026, 3, 29, 5, 0, tzinfo=tz)
    )
    assert [r.strftime("%H:%M") for r in spring] == ["00:30", "01:30", "03:30", "04:30"]


def test_fields_parse_as_celerys() -> None:
    c = crontab(minute="1,13,30-45/5", hour="22-2", day_of_week="fri-mon", month_of_year="*/4")
    assert c.minute == {1, 13, 30, 35, 40, 45}
    assert c.hour == {22, 23, 0, 1, 2}
    assert c.day_of_week == {5, 6, 0, 1}
    assert c.month_of_year == {1, 5, 9}
    assert crontab(day_of_week="sunday").day_of_week == {0}
    assert crontab(month_of_year="jan-mar").month_of_year == {1, 2, 3}
    assert crontab.from_string("*/20 9 1 * mon") == crontab("*/20", 9, "mon", 1)
    for bad in ({"minute": 60}, {"hour": "25"}, {"day_of_month": 0}, {"minute": "*/0"},
                {"day_of_week": "funday"}, {"minute": "-1"}, {"minute": ""}):  # fmt: skip
        with pytest.raises(ConfigurationError):
            crontab(**bad)


def test_is_due_as_celerys() -> None:
    now = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)
    every = crontab(minute="*/10", nowfun=lambda: now)
    assert every.is_due(datetime(2026, 6, 1, 11, 55, tzinfo=UTC)) == (True, 570.0)
    assert every.is_due(datetime(2026, 6, 1, 12, 0, 1, tzinfo=UTC)) == (False, 570.0)
    ten = schedule(timedelta(seconds=10), nowfun=lambda: now)
    assert ten.is_due(now - timedelta(seconds=10)) == (True, 10.0)
    assert ten.is_due(now - timedelta(seconds=4)) == (False, 6.0)
    assert ten.remaining_estimate(now.replace(tzinfo=None)) == timedelta(seconds=10)  # naive: UTC


def test_a_schedule_from_seconds_or_timedelta_and_the_app_timezone() -> None:
    assert maybe_schedule(5) == schedule(5.0) == maybe_schedule(timedelta(seconds=5))

    class Conf:
        timezone = "Asia/Tokyo"

    class App:
        conf = Conf()

    c = maybe_schedule(crontab(hour=9, minute=0), app=App())
    run = c.next_run_after(datetime(2026, 6, 1, tzinfo=UTC))
    assert run.astimezone(UTC) == datetime(2026, 6, 1, 0, 0, tzinfo=UTC) + timedelta(days=1)
    with pytest.raises(ConfigurationError):
        maybe_schedule("every minute")
    with pytest.raises(ConfigurationError):
        schedule(0)


def test_enable_utc_false_without_a_timezone_uses_the_machines_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Conf:
        timezone = "UTC"
        enable_utc = False

    class App:
        conf = Conf()

    monkeypatch.setenv("TZ", "America/New_York")
    assert crontab(app=App()).tz == ZoneInfo("America/New_York")
    Conf.enable_utc = True
    assert crontab(app=App()).tz == ZoneInfo("UTC")
    Conf.timezone = "Asia/Tokyo"
    assert crontab(app=App()).tz == ZoneInfo("Asia/Tokyo")


def test_an_impossible_crontab_and_solar_are_refused_clearly() -> None:
    with pytest.raises(ConfigurationError, match="never runs"):
        crontab(minute=0, hour=0, day_of_month=31, month_of_year=2).next_run_after(
            datetime(2026, 1, 1, tzinfo=UTC)
        )
    with pytest.raises(ConfigurationError, match="crontab"):
        solar("sunrise", 52.5, 13.4)


def _oracle_runs(entry: crontab, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """The documented rule, by scanning every real minute: a minute whose wall time matches
    runs, a repeated wall time only the first time unless the entry runs every hour; a matching
    wall time the clocks skipped runs at its instant read with the offset from before the jump."""
    runs = set()
    t = start
    while t <= end:
        local = t.astimezone(zone)
        wall = local.replace(tzinfo=None)
        repeated = (
            wall.replace(tzinfo=zone, fold=0).utcoffset()
            != wall.replace(tzinfo=zone, fold=1).utcoffset()
        )
        if _matches(entry, wall) and (not repeated or local.fold == 0 or len(entry.hour) == 24):
            runs.add(t)
        t += timedelta(minutes=1)
    # Skipped wall times: those a day's wall clock has and no real minute showed.
    day = start.astimezone(zone).date()
    while day <= end.astimezone(zone).date():
        for hour in range(24):
            for minute in range(60):
                wall = datetime(day.year, day.month, day.day, hour, minute)
                instant = wall.replace(tzinfo=zone).astimezone(UTC)
                skipped = instant.astimezone(zone).replace(tzinfo=None) != wall
                if skipped and _matches(entry, wall) and len(entry.hour) < 24:
                    runs.add(instant)
        day += timedelta(days=1)
    return sorted(r for r in runs if start < r <= end)  # as _runs: strictly after start


def _matches(entry: crontab, wall: datetime) -> bool:
    return (
        wall.minute in entry.minute
        and wall.hour in entry.hour
        and wall.day in entry.day_of_month
        and wall.month in entry.month_of_year
        and wall.isoweekday() % 7 in entry.day_of_week
    )


@pytest.mark.parametrize(
    ("zone", "days"),
    [
        ("Europe/Berlin", [(2026, 3, 29), (2026, 10, 25)]),
        ("America/New_York", [(2026, 3, 8), (2026, 11, 1)]),
    ],
)
@pytest.mark.parametrize(
    "spec",
    [
        {"minute": 30, "hour": 2},
        {"minute": 30},
        {"minute": "*/15", "hour": "1-3"},
        {"minute": 0, "hour": "*/2", "day_of_week": "sun"},
        {"minute": 59, "hour": 1},
    ],
)
def test_next_runs_across_dst_match_a_minute_by_minute_scan(
    zone: str, days: list[tuple[int, int, int]], spec: dict
) -> None:
    tz = ZoneInfo(zone)
    entry = crontab(**spec, tz=zone)
    for day in days:
        start = datetime(*day, tzinfo=UTC) - timedelta(days=1)
        end = start + timedelta(days=3)
        expected = _oracle_runs(entry, tz, start, end)
        got = [r.astimezone(UTC) for r in _runs(entry, start, end)]
        assert got == expected, (spec, day)


@pytest.mark.parametrize(
    ("tz", "days"),
    [
        ("Europe/Berlin", [(2026, 3, 29), (2026, 10, 25)]),
        ("America/New_York", [(2026, 3, 8), (2026, 11, 1)]),
    ],
)
def test_on_dst_days_every_difference_from_celery_is_a_celery_dst_defect(
    tz: str, days: list[tuple[int, int, int]]
) -> None:
    """Around DST, next runs equal Celery's except where Celery's is wrong by the rule in the
    module docstring, each case named: Celery's next run is not after the last one (it would
    run the entry again at once in the repeated hour), Celery skips a wall time the clocks
    skipped (we run it as they jump), or Celery skips the repeated hour of an hourly entry."""
    celery = pytest.importorskip("celery")
    from celery.schedules import crontab as celery_crontab

    app = celery.Celery(set_as_current=False)
    app.conf.timezone = tz
    zone = ZoneInfo(tz)
    counts = {"same": 0, "celery runs again": 0, "skipped wall time": 0, "repeated hour": 0}
    dst_specs = [{"minute": "*/20"}, {"minute": 30, "hour": 2}, {"minute": "*/15", "hour": "1-3"}]
    for spec in dst_specs:
        for day in days:
            last = datetime(*day, tzinfo=UTC) - timedelta(hours=12)
            while last < datetime(*day, tzinfo=UTC) + timedelta(hours=24):
                ours = crontab(**spec, nowfun=lambda last=last: last, tz=tz)
                mine = (last + ours.remaining_estimate(last)).astimezone(UTC)
                theirs = celery_crontab(**spec, nowfun=lambda last=last: last, app=app)
                celerys = (last + theirs.remaining_estimate(last)).astimezone(UTC)
                local = mine.astimezone(zone)
                if mine == celerys:
                    counts["same"] += 1
                elif celerys <= last:
                    counts["celery runs again"] += 1
                elif not _matches(ours, local.replace(tzinfo=None)):  # shifted by the jump
                    assert celerys > mine, (spec, last)
                    counts["skipped wall time"] += 1
                else:
                    assert local.fold == 1 and len(ours.hour) == 24, (spec, last, mine, celerys)
                    counts["repeated hour"] += 1
                last += timedelta(minutes=11)
    assert counts["same"] > 0.9 * sum(counts.values())
    assert counts["celery runs again"] and counts["skipped wall time"] and counts["repeated hour"]
