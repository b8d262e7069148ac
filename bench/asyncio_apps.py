"""The ``async def`` no-op task of ``asyncio_drain.py``; broker and backend from the environment
(``FASTQ_BROKER_URL``, ``FASTQ_RESULT_BACKEND``)."""

from fastq import App

app = App("bench-asyncio")


@app.task(name="bench.anoop")
async def anoop() -> None:
    return None
