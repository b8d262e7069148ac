"""``app.autodiscover_tasks()`` and Django's installed apps (``fastq.loader``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastq import App


@pytest.fixture
def packages(tmp_path: Path) -> Iterator[Path]:
    """``shop`` (with tasks), ``blog`` (without), ``broken`` (tasks importing what is missing)."""
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "tasks.py").write_text(
        "from fastq import shared_task\n\n@shared_task(name='shop.sell')\n"
        "def sell(n):\n    return n\n"
    )
    (tmp_path / "blog").mkdir()
    (tmp_path / "blog" / "__init__.py").write_text("")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "__init__.py").write_text("")
    (tmp_path / "broken" / "tasks.py").write_text("import not_installed_anywhere\n")
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.split(".")[0] in ("shop", "blog", "broken")]:
        del sys.modules[name]


def test_lazy_until_the_worker_imports_modules(packages: Path) -> None:
    app = App("disc", broker="memory://", set_as_current=False)
    app.autodiscover_tasks(["shop", "blog"])
    assert "shop.tasks" not in sys.modules
    app.import_modules()  # what the worker does at start
    assert "shop.sell" in app.tasks
    assert "blog.tasks" not in sys.modules


def test_force_and_a_callable_list(packages: Path) -> None:
    app = App("disc", broker="memory://", set_as_current=False)
    app.autodiscover_tasks(lambda: ["shop"], force=True)
    assert "shop.sell" in app.tasks


def test_an_import_error_inside_a_tasks_module_is_raised(packages: Path) -> None:
    app = App("disc", broker="memory://", set_as_current=False)
    app.autodiscover_tasks(["broken"])
    with pytest.raises(ModuleNotFoundError, match="not_installed_anywhere"):
        app.import_modules()


def test_a_missing_package_is_an_error(packages: Path) -> None:
    app = App("disc", broker="memory://", set_as_current=False)
    with pytest.raises(ModuleNotFoundError):
        app.autodiscover_tasks(["no_such_package"], force=True)
