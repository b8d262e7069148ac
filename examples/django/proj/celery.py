"""The fastq app of a Django project, as in Celery's "First steps with Django" guide; with Celery
the only difference is the import (``from celery import Celery``)."""

import os

from fastq import Celery

# Set the default Django settings module for the 'fastq' program.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")

# Settings from Django's settings module: every name that starts with CELERY_, e.g.
# CELERY_BROKER_URL for broker_url.
app.config_from_object("django.conf:settings", namespace="CELERY")

# Task modules of every installed Django app (demoapp/tasks.py).
app.autodiscover_tasks()


@app.task(bind=True, ignore_result=True)
def debug_task(self):
    print(f"Request: {self.request!r}")
