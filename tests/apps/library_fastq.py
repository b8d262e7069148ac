"""A fastq project app whose tasks all come from the reusable module (``tests.apps.library``)."""

import os

from fastq import App

app = App(
    "library",
    broker=os.environ.get("FASTQ_BROKER_URL", "redis://127.0.0.1:6379/8"),
    backend=os.environ.get("FASTQ_RESULT_BACKEND", "redis://127.0.0.1:6379/9"),
)

import tests.apps.library  # noqa: E402, F401  (after the app: shared tasks reach it anyway)
