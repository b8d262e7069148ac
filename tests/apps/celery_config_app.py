"""``tests.apps.config_app`` on real Celery: ``celery -A tests.apps.celery_config_app worker``."""

import logging
import sys

from celery import Celery

from tests.apps import config_tasks

logging.basicConfig(stream=sys.stdout, format="USERLOG %(message)s", level=logging.INFO)

app = config_tasks.register(Celery("cfg"))
app.config_from_object("tests.apps.old_settings")
