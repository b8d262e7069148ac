"""Add-ons Celery users import from ``celery.contrib``: the test worker and the pytest plugin."""
