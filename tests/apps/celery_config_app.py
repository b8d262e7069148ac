"""``tests.apps.config_app`` on real Celery: ``celery -A tests.apps.celery_config_app worker``."""

import logging
import sys
import time

from celery import Celery

logging.basicConfig(stream=sys.stdout, format="USERLOG %(message)s", level=logging.INFO)

app = Celery("cfg")
app.config_from_object("tests.apps.old_settings")


@app.task(name="cfg.limited")
def limited(index: int) -> float:
    return time.time()
