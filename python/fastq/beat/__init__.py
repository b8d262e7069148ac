"""Periodic tasks: ``fastq beat`` sends ``beat_schedule``'s entries when they are due, with its
state (each entry's last run, and the lease that makes one of many beat processes the leader) on
the broker. See docs/periodic-tasks.md."""

from fastq.beat.entries import Entry, StoredEntries, entries_from_conf
from fastq.beat.service import Beat, start_embedded, stop_embedded
from fastq.beat.state import BeatState, state_for

__all__ = [
    "Beat",
    "BeatState",
    "Entry",
    "StoredEntries",
    "entries_from_conf",
    "start_embedded",
    "state_for",
    "stop_embedded",
]
