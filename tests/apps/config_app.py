"""A fastq app configured only by ``tests.apps.old_settings``: ``fastq -A tests.apps.config_app``.

Before the app, the root logger gets a handler of the user's (lines start ``USERLOG``), which the
worker replaces unless ``worker_hijack_root_logger`` is off.
"""

import logging
import sys

from fastq import App

from tests.apps import config_tasks

logging.basicConfig(stream=sys.stdout, format="USERLOG %(message)s", level=logging.INFO)

app = config_tasks.register(App("cfg"))
app.config_from_object("tests.apps.old_settings")
