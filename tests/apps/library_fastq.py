"""A fastq project app whose tasks all come from the reusable module (``tests.apps.library``)."""

import os

from fastq import App

from tests.apps.shared import redis_db

app = App(
    "library",
    broker=os.environ.get("FASTQ_BROKER_URL", redis_db(8)),
    backend=os.environ.get("FASTQ_RESULT_BACKEND", redis_db(9)),
)

import tests.apps.library  # noqa: E402, F401  (after the app: shared tasks reach it anyway)
