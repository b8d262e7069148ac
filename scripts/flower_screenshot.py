"""Takes ``docs/img/flower-tasks.png`` and ``flower-worker.png``: Flower showing a fastq worker.

Starts a throwaway ``redis-server``, Flower, and a fastq worker with events on (``-E``) of
``scripts/flower_demo.py``; sends it a mix of tasks (succeeded, failed, running, waiting behind
a running one, with a countdown); then has headless Chromium take Flower's task list and the
worker's task lists (active, scheduled, reserved). Not part of CI.

Needs ``redis-server``, Chromium (Debian: ``apt-get install -y chromium``) and the dev venv
(Flower is a test dependency)::

    .venv/bin/python scripts/flower_screenshot.py [--out docs/img/flower-tasks.png]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: What a page must weigh at most (docs/operations.md embeds them).
MAX_BYTES = 300_000
NODE = "fastq@shop-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def wait(what: str, check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"flower_screenshot: {what} did not happen within {timeout:.0f}s")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("flower_screenshot: no Chromium (Debian: apt-get install -y chromium)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "img" / "flower-tasks.png"))
    parser.add_argument("--size", default="1280,720", help="window size: width,height")
    options = parser.parse_args()
    browser = chromium()
    redis_port, flower_port = free_port(), free_port()
    broker = f"redis://127.0.0.1:{redis_port}/0"
    env = {
        **os.environ,
        "FASTQ_BROKER_URL": broker,
        "FASTQ_RESULT_BACKEND": f"redis://127.0.0.1:{redis_port}/1",
        "PYTHONPATH": str(ROOT / "scripts"),
        "FLOWER_UNAUTHENTICATED_API": "true",
    }
    logs = Path(tempfile.mkdtemp(prefix="flower-screenshot-"))
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    try:
        start(
            "redis", ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"]
        )
        flower_url = f"http://127.0.0.1:{flower_port}"
        start("flower", [str(BIN / "celery"), f"--broker={broker}", "flower",
                         f"--port={flower_port}", "--address=127.0.0.1"])  # fmt: skip
        wait("Flower answering", lambda: get(flower_url + "/api/workers") is not None)
        time.sleep(2)  # its event receiver subscribed: Redis keeps no events for later
        start("worker", [str(BIN / "fastq"), "-A", "flower_demo", "worker", "-E", "-n", NODE,
                         "--pool", "prefork", "-c", "2", "-l", "INFO"])  # fmt: skip
        wait("the worker in Flower", lambda: get(flower_url + "/api/workers?status=1"))
        sys.path.insert(0, str(ROOT / "scripts"))
        os.environ.update({k: env[k] for k in ("FASTQ_BROKER_URL", "FASTQ_RESULT_BACKEND")})
        import flower_demo

        app = flower_demo.app
        # The task list: invoices, images and card charges (every fourth one declined).
        results: list[Any] = []
        for i in range(1, 9):
            results.append(flower_demo.send_invoice.delay(1000 + i, f"customer{i}@example.com"))
            results.append(flower_demo.resize_image.delay(f"/media/product-{i}.jpg", 640))
            results.append(flower_demo.charge_card.delay(1000 + i, 1999 + 100 * i))
        for r in results:
            try:
                r.get(timeout=60)
            except Exception:  # the declined cards
                pass

        # The worker's task lists: on a queue it does not consume yet, a long report first in
        # each child's batch, tasks behind it (reserved) and one with a countdown (scheduled);
        # then the worker adds the queue, and each child fetches one batch of it.
        def on_reports(task: Any, *args: Any, **options: Any) -> None:
            task.apply_async(args, queue="reports", **options)

        on_reports(flower_demo.build_monthly, "2026-11")
        on_reports(flower_demo.send_invoice, 2001, "anna@example.com")
        on_reports(flower_demo.resize_image, "/media/banner.jpg", 1200)
        on_reports(flower_demo.send_invoice, 2002, "later@example.com", countdown=3600)
        on_reports(flower_demo.build_monthly, "2026-10")
        on_reports(flower_demo.send_invoice, 2003, "bob@example.com")
        app.control.add_consumer("reports", destination=[NODE], reply=True, timeout=5)
        time.sleep(4)  # both children on their report; the events reach Flower
        app.close()
        out = Path(options.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        width, height = (int(x) for x in options.size.split(","))
        pages = {  # the worker page down to its reserved tasks
            out: (flower_url + "/tasks", height),
            out.with_name(out.stem.replace("tasks", "worker") + out.suffix): (
                f"{flower_url}/worker/{NODE}#tab-tasks",
                int(height * 1.75),
            ),
        }
        status = 0
        for path, (url, tall) in pages.items():
            subprocess.run(
                [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 f"--window-size={width},{tall}", "--virtual-time-budget=10000",
                 f"--screenshot={path}", url],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            size = path.stat().st_size
            print(f"{path}: {size} bytes")
            if size > MAX_BYTES:
                print(f"flower_screenshot: over {MAX_BYTES} bytes; try a smaller --size")
                status = 1
        return status
    finally:
        for proc in reversed(procs):  # the worker cold (SIGQUIT): its reports take a minute
            proc.send_signal(signal.SIGQUIT if proc is procs[-1] else signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())
