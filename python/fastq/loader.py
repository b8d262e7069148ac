"""Finding task modules: ``imports``/``include`` and ``app.autodiscover_tasks()`` (Celery's
loader), including Django's installed apps when no packages are named."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from types import ModuleType

Packages = Iterable[str] | Callable[[], Iterable[str]] | None


def discover(packages: Packages, related_name: str | None) -> list[ModuleType]:
    """Imports ``<package>.<related_name>`` of each package that has one (``tasks`` by default);
    ``packages`` may be a callable (read late, as Django's settings) or None: Django's installed
    apps."""
    if callable(packages):
        packages = packages()
    names = list(packages) if packages is not None else django_apps()
    found = [find_related_module(name, related_name) for name in names]
    return [m for m in found if m is not None]


def find_related_module(package: str, related_name: str | None) -> ModuleType | None:
    """``package.related_name``, None if the package has no such module. An import error from
    inside an existing module is raised, not taken for a missing module."""
    try:
        module = importlib.import_module(package)
        if not related_name:
            return module
    except ModuleNotFoundError:
        # An installed app may be named by its AppConfig class: look in the module above it.
        parent = package.rpartition(".")[0]
        if not parent:
            raise
        package = parent
    name = f"{package}.{related_name}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


def django_apps() -> list[str]:
    """The names of Django's installed apps, or nothing when Django is not set up here."""
    if "django" not in sys.modules:
        return []
    from django.apps import apps
    from django.conf import settings

    if not settings.configured:
        return []
    if not apps.ready:
        import django

        django.setup()
    return [config.name for config in apps.get_app_configs()]
