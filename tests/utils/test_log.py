"""Task loggers name the running task (``fastq.utils.log``)."""

from __future__ import annotations

import logging

import pytest
from fastq import App
from fastq.utils.log import TaskFormatter, get_task_logger

FORMAT = "%(levelname)s %(message)s"


def test_records_carry_the_running_task(caplog: pytest.LogCaptureFixture) -> None:
    app = App("log", broker="memory://", task_always_eager=True, set_as_current=False)
    logger = get_task_logger("tests.utils.log_demo")

    @app.task(name="log.work")
    def work() -> None:
        logger.warning("inside")

    with caplog.at_level(logging.INFO, logger="fastq.task"):
        work.apply(task_id="tid-1")
        logger.warning("outside")
    inside, outside = caplog.records[-2:]
    formatter = TaskFormatter(FORMAT)
    assert formatter.format(inside).endswith("log.work[tid-1]: inside")
    assert formatter.format(outside).endswith("???[???]: outside")
    plain = logging.LogRecord("other", logging.INFO, __file__, 1, "plain", None, None)
    assert formatter.format(plain) == "INFO plain"


def test_the_same_logger_gets_one_filter_and_reserved_names_are_refused() -> None:
    first = get_task_logger("tests.utils.log_twice")
    assert get_task_logger("tests.utils.log_twice") is first
    assert len(first.filters) == 1
    assert first.parent is logging.getLogger("fastq.task")
    with pytest.raises(RuntimeError, match="reserved"):
        get_task_logger("fastq.task")
