"""A Celery project app whose tasks all come from the reusable module (``tests.apps.library``)."""

import os

from tests.apps.shared import redis_db

os.environ["FASTQ_TEST_FLAVOUR"] = "celery"

from celery import Celery

app = Celery(
    "library",
    broker=os.environ.get("FASTQ_BROKER_URL", redis_db(8)),
    backend=os.environ.get("FASTQ_RESULT_BACKEND", redis_db(9)),
)
app.conf.update(worker_hijack_root_logger=True, broker_connection_retry_on_startup=True)

import tests.apps.library  # noqa: E402, F401  (after the app: shared tasks reach it anyway)
