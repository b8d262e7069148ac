"""The beat loop: sends each ``beat_schedule`` entry when it is due, from whichever beat process
holds the lease.

A tick is sent only after it was recorded (``BeatState.record``: the entry's last run moved
from the value this leader read to the tick's time, under its lease token). So two processes
never both send one tick: the second one's record fails, whether it lost the lease or another
leader moved the entry on first. A process killed between the record and the send loses that
tick (at most once); a send that raises puts the record back, so the tick is tried again.

An entry's stored last run is the time of the tick it sent (not the time it sent it), so runs
do not drift. Ticks that fell due while no beat led for up to the lease time (a failover) are
each sent, late. After longer downtime that missed more than one tick, the entry runs once at
once and its last run becomes now (``beat_catch_up = "once"``, Celery's behaviour), or the
missed ticks are dropped and it waits for its next time (``"skip"``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from fastq.beat.entries import Entry, entries_from_conf, entries_from_state
from fastq.beat.state import BeatState, state_for
from fastq.errors import ConfigurationError, FastqError
from fastq.schedules import crontab

if TYPE_CHECKING:
    from fastq.app import App

log = logging.getLogger("fastq.beat")

#: ``beat_scheduler`` values that mean "the default scheduler" (fastq's).
DEFAULT_SCHEDULERS = (
    "celery.beat:PersistentScheduler",
    "celery.beat.PersistentScheduler",
    "fastq.beat:Beat",
    "fastq.beat.Beat",
)
#: The longest a follower waits between attempts to take the lease (seconds).
FOLLOWER_POLL = 1.0
#: Seconds to wait after a failed send or an unreachable store before trying again.
RETRY_DELAY = 1.0


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


class Beat:
    """Runs the schedule of ``app``: ``Beat(app).run(stop_event)``. Any number may run against
    one broker; one leads at a time."""

    def __init__(
        self,
        app: App,
        *,
        state: BeatState | None = None,
        max_interval: float | None = None,
    ) -> None:
        scheduler = app.conf.beat_scheduler
        if scheduler not in DEFAULT_SCHEDULERS:
            raise ConfigurationError(
                f"beat_scheduler {scheduler!r} is not supported: fastq beat keeps its schedule "
                "state on the broker itself (highly available, no local file); remove the "
                "setting, or keep running that scheduler with Celery's beat"
            )
        self.app = app
        app.finalize()
        self.configured = entries_from_conf(app)
        self.entries = dict(self.configured)
        self.state = state or state_for(app.conf, app.broker_url, app.result_backend_url)
        self.lease_timeout = self.state.lease_timeout
        self.max_interval = float(max_interval or app.conf.beat_max_loop_interval)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.leading = False
        self.last: dict[str, float] = {}
        self._renew_at = 0.0
        self._shadowed: set[str] = set()

    # -- leadership -------------------------------------------------------------------------------
    def _lead(self, now: float) -> bool:
        """Takes or renews the lease when due; True while this process leads."""
        if self.leading and now < self._renew_at:
            return True
        held = self.state.acquire(self.token)
        if held:
            self._renew_at = now + self.lease_timeout / 3
            if not self.leading:
                self.leading = True
                log.info("beat %s leads (lease %gs)", self.token, self.lease_timeout)
            self._sync(now)
        elif self.leading:
            self.leading = False
            log.warning("beat %s lost the lease; following", self.token)
        return self.leading

    def _sync(self, now: float) -> None:
        """At every take-over and renewal: reads the entries stored at run time and the last
        runs; an entry seen for the first time starts now (its first run is one period later,
        as in Celery); the state of entries no longer in the schedule goes."""
        dynamic = entries_from_state(self.state, self.app)
        for name in (set(dynamic) & set(self.configured)) - self._shadowed:
            self._shadowed.add(name)
            log.warning("beat: stored entry %r has a beat_schedule name; the configured wins", name)
        entries = {**dynamic, **self.configured}
        for name in set(entries) - set(self.entries):
            log.info("beat: entry %r added", name)
        for name in set(self.entries) - set(entries):
            log.info("beat: entry %r removed", name)
        self.entries = entries
        stored = self.state.last_runs()
        self.last = {}
        for name in self.entries:
            if name in stored:
                self.last[name] = stored[name]
            elif self.state.record(self.token, name, None, now):
                self.last[name] = now
        for name in set(stored) - set(self.entries):
            if self.state.record(self.token, name, stored[name], None):
                log.info("beat: %r is no longer in the schedule; its state is removed", name)
        if len(self.last) < len(self.entries):  # another leader got in between: start again
            self.leading = False

    def release(self) -> None:
        if self.leading:
            self.leading = False
            try:
                self.state.release(self.token)
            except FastqError as exc:
                log.warning("beat: could not release the lease (it expires by itself): %s", exc)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> None:
        """Until ``stop`` is set: leads or waits to, and sends what is due."""
        stop = stop or threading.Event()
        log.info(
            "beat %s: %d entr%s: %s",
            self.token,
            len(self.entries),
            "y" if len(self.entries) == 1 else "ies",
            ", ".join(self.entries) or "(none)",
        )
        try:
            while not stop.is_set():
                try:
                    delay = self.tick()
                except FastqError as exc:
                    log.error("beat: %s; trying again in %gs", exc, RETRY_DELAY)
                    delay = RETRY_DELAY
                except Exception:  # a bug must not stop periodic tasks for good
                    log.exception("beat: unexpected error; trying again in %gs", RETRY_DELAY)
                    delay = RETRY_DELAY
                stop.wait(delay)
        finally:
            self.release()
            self.state.close()

    def tick(self) -> float:
        """One pass; returns how long to sleep before the next."""
        now = time.time()
        follow_poll = min(FOLLOWER_POLL, self.lease_timeout / 10)
        if not self._lead(now):
            return follow_poll
        wake = min(self._renew_at, now + self.max_interval)
        for entry in self.entries.values():
            if not self.leading:
                return follow_poll
            last = self.last.get(entry.name)
            if last is None:
                continue
            due = entry.schedule.next_run_after(_at(last)).timestamp()
            if due <= now:
                if not self._run(entry, last, due, now):
                    return RETRY_DELAY
                due = entry.schedule.next_run_after(_at(self.last[entry.name])).timestamp()
            wake = min(wake, due)
        return max(0.0, wake - time.time())

    def _run(self, entry: Entry, last: float, due: float, now: float) -> bool:
        """Records then sends the tick due at ``due``; False if it could not (retry later)."""
        # Ticks missed during a failover (the lease time, plus a follower's poll) are each sent,
        # late; older ones were missed in downtime and are caught up once (or skipped).
        downtime = due < now - self.lease_timeout - FOLLOWER_POLL
        missed = downtime and entry.schedule.next_run_after(_at(due)).timestamp() <= now
        new = now if missed else due
        skip = (missed and entry.catch_up == "skip") or self._past_deadline(entry, now)
        if not self.state.record(self.token, entry.name, last, new):
            log.warning("beat: %r was moved on by another beat; re-reading the lease", entry.name)
            self.leading = False
            return True
        self.last[entry.name] = new
        if skip:
            log.info("beat: %r missed its run while no beat led; skipped", entry.name)
            return True
        try:
            self.send(entry, due)
        except Exception as exc:
            log.error("beat: sending %r failed (%r); it will be tried again", entry.name, exc)
            if self.state.record(self.token, entry.name, new, last):
                self.last[entry.name] = last
            return False
        return True

    def _past_deadline(self, entry: Entry, now: float) -> bool:
        """Celery's ``beat_cron_starting_deadline``: a crontab entry with no run time in the
        last ``deadline`` seconds is not caught up."""
        deadline = self.app.conf.beat_cron_starting_deadline
        if deadline is None or not isinstance(entry.schedule, crontab):
            return False
        return entry.schedule.next_run_after(_at(now - deadline)).timestamp() > now

    def send(self, entry: Entry, due: float) -> Any:
        """Sends the entry's task as Celery's beat does, with its options and the headers
        ``periodic_task_name`` and ``celery_beat_task``, plus the tick's time."""
        options = dict(entry.options)
        options["headers"] = {
            **(options.get("headers") or {}),
            "periodic_task_name": entry.name,
            "celery_beat_task": True,
            "fastq_beat_due": _at(due).isoformat(),
        }
        task = self.app.tasks.get(entry.task)
        if task is not None:
            result = task.apply_async(entry.args, entry.kwargs, **options)
        else:
            result = self.app.send_task(entry.task, entry.args, entry.kwargs, **options)
        log.info("beat: sending due task %s (%s) %s", entry.name, entry.task, result.id)
        return result


def start_embedded(beat: Beat) -> tuple[threading.Thread, threading.Event]:
    """Runs ``beat`` in a thread of this process (``worker -B``); see ``stop_embedded``."""
    stop = threading.Event()
    thread = threading.Thread(target=beat.run, args=(stop,), name="fastq-beat", daemon=True)
    thread.start()
    return thread, stop


def stop_embedded(started: list[tuple[threading.Thread, threading.Event]]) -> None:
    """Stops the beat threads ``start_embedded`` started (releasing the lease)."""
    for thread, stop in started:
        stop.set()
        thread.join(5.0)
