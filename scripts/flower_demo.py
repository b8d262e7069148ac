"""A small fastq app for the Flower screenshot in docs/operations.md
(``scripts/flower_screenshot.py`` runs a worker of it)."""

from __future__ import annotations

import os
import random
import time

from fastq import App

app = App(
    "shop",
    broker=os.environ["FASTQ_BROKER_URL"],
    backend=os.environ["FASTQ_RESULT_BACKEND"],
)


@app.task(name="shop.send_invoice")
def send_invoice(order_id: int, email: str) -> str:
    time.sleep(random.uniform(0.05, 0.3))
    return f"invoice {order_id} sent to {email}"


@app.task(name="shop.resize_image")
def resize_image(path: str, width: int) -> dict[str, object]:
    time.sleep(random.uniform(0.1, 0.5))
    return {"path": path.replace(".jpg", f"-{width}.jpg"), "width": width}


@app.task(name="shop.charge_card")
def charge_card(order_id: int, cents: int) -> int:
    time.sleep(0.1)
    if order_id % 4 == 0:
        raise ValueError(f"card declined for order {order_id}")
    return cents


@app.task(name="reports.build_monthly")
def build_monthly(month: str) -> str:
    time.sleep(60)
    return f"report-{month}.pdf"
