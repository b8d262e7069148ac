"""Reusable tasks of a Django app: @shared_task, so the app does not import the project."""

from demoapp.models import Widget
from fastq import shared_task


@shared_task
def add(x, y):
    return x + y


@shared_task
def xsum(numbers):
    return sum(numbers)


@shared_task
def rename_widget(widget_id, name):
    widget = Widget.objects.get(id=widget_id)
    widget.name = name
    widget.save()
    return widget.name
