"""Testing helpers (Celery's ``celery.contrib.testing``)."""
