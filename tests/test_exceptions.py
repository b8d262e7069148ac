"""Celery's exception names catch what fastq raises (``fastq.exceptions``)."""

from __future__ import annotations

import celery.exceptions
import pytest
from fastq import App, errors, exceptions


def test_every_name_is_one_celery_has() -> None:
    assert set(exceptions.__all__) <= set(celery.exceptions.__all__)


def test_predicates_share_celerys_base() -> None:
    for cls in (exceptions.Retry, exceptions.Reject, exceptions.Ignore):
        assert issubclass(cls, exceptions.TaskPredicate)
        assert issubclass(cls, exceptions.CeleryError)


def test_except_clauses_written_for_celery_catch_fastqs_errors() -> None:
    app = App("exc", broker="redis://127.0.0.1:1/0", set_as_current=False)
    with pytest.raises(exceptions.OperationalError):
        app.send_task("nothing.there")
    app.close()
    with pytest.raises(exceptions.ImproperlyConfigured):
        App("exc", broker="nosuch://x", set_as_current=False).broker  # noqa: B018
    with pytest.raises(exceptions.NotRegistered):
        App("exc", broker="memory://", set_as_current=False).get_task("missing")


def test_queue_not_found_reads_as_a_message() -> None:
    exc = errors.QueueNotFound("queue 'x' is not in task_queues")
    assert str(exc) == "queue 'x' is not in task_queues"
    assert isinstance(exc, KeyError) and isinstance(exc, exceptions.ImproperlyConfigured)
