"""Helpers Celery users import from ``celery.utils`` (only ``log`` so far)."""
