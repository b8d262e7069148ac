"""A Celery 3-style settings module (old upper-case names), read by both config apps."""

import os

# Every lower-case name here would count as a new-style setting (Celery refuses the mix): the
# tests' Redis server (FASTQ_TEST_REDIS, per xdist worker) is read inline.
_REDIS = os.environ.get("FASTQ_TEST_REDIS", "redis://127.0.0.1:6379")
BROKER_URL = os.environ.get("FASTQ_BROKER_URL", f"{_REDIS}/8")
CELERY_RESULT_BACKEND = os.environ.get("FASTQ_RESULT_BACKEND", f"{_REDIS}/9")
CELERY_TIMEZONE = "Asia/Tokyo"
CELERY_ANNOTATIONS = {"cfg.limited": {"rate_limit": "2/s"}}
CELERYD_HIJACK_ROOT_LOGGER = os.environ.get("FASTQ_TEST_HIJACK") == "1"
BROKER_CONNECTION_RETRY_ON_STARTUP = os.environ.get("FASTQ_TEST_RETRY_ON_STARTUP", "1") == "1"
BROKER_CONNECTION_MAX_RETRIES = int(os.environ.get("FASTQ_TEST_MAX_RETRIES") or 0) or None
# Unset (None): fastq runs the task again, Celery fails it.
CELERY_REJECT_ON_WORKER_LOST = {"1": True, "0": False}.get(os.environ.get("FASTQ_TEST_REJECT", ""))
CELERY_REDIRECT_STDOUTS = os.environ.get("FASTQ_TEST_REDIRECT") != "0"
CELERY_DISABLE_RATE_LIMITS = os.environ.get("FASTQ_TEST_NO_RATE_LIMITS") == "1"
CELERYD_MAX_MEMORY_PER_CHILD = int(os.environ.get("FASTQ_TEST_MAX_MEMORY") or 0) or None
CELERY_ENABLE_REMOTE_CONTROL = os.environ.get("FASTQ_TEST_REMOTE_CONTROL") != "0"
