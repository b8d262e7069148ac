"""The package's layers (DESIGN.md, "Layers"): no module imports one of a higher layer at run time.

Read from the source with ``ast``, so an import inside a function counts as much as one at the top
of a module; only ``if TYPE_CHECKING:`` blocks are left out (annotations never run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "fastq"

#: A module's layer is that of its longest listed prefix ("fastq" itself: only the package root).
LAYERS = {
    # 1. no fastq imports above them
    "fastq.errors": 1,
    "fastq.exceptions": 1,
    "fastq.states": 1,
    "fastq.urls": 1,
    "fastq.redis_errors": 1,
    "fastq.signals": 1,
    "fastq.protocol": 1,
    "fastq.serialization": 1,
    "fastq._core": 1,
    "fastq._typing": 1,
    "fastq.backoff": 1,
    "fastq.promise": 1,  # what AsyncResult.then returns
    "fastq.control_channel": 1,  # remote control's wire format and the channel brokers provide
    "fastq.schedules": 1,  # crontab and schedule; the app is duck-typed (its conf.timezone)
    "fastq.celery_settings": 1,  # Celery's setting names and defaults: data only
    # 2. built from a URL and conf
    "fastq.config": 2,
    "fastq.routing": 2,
    "fastq.publish_retry": 2,  # Celery's publish retry policy around a broker's publish
    "fastq.sqlitedb": 2,  # the SQLite file shared by the sqlite broker and backend
    "fastq.sentinel": 2,  # Redis Sentinel: the master a sentinel:// URL's sentinels name
    "fastq.redis_cluster": 2,  # Redis Cluster: the seeds of a redis+cluster:// URL, its client
    "fastq.brokers": 2,
    "fastq.backends": 2,
    # 3. the programming model, and running a task (eager mode and the worker alike)
    "fastq": 3,  # the public names: ``from fastq import App, chain, ...``
    "fastq._state": 3,
    "fastq.app": 3,
    "fastq.builtin_tasks": 3,
    "fastq.result": 3,
    "fastq.task": 3,
    "fastq.canvas": 3,
    "fastq.stamping": 3,
    "fastq.pydantic_models": 3,  # @app.task(pydantic=True)  # Celery's stamping of signatures
    "fastq.maps": 3,
    "fastq.loader": 3,
    "fastq.execution": 3,
    "fastq.utils": 3,  # task loggers read the running task
    "fastq.control": 3,  # the remote-control client, ``app.control``
    "fastq.tracing": 3,  # OpenTelemetry spans of publishes (the app) and runs (the worker)
    "fastq.events": 3,  # Celery's events: what workers send, and a client's task-sent
    # 4. processes and tools built on all of the above
    "fastq.worker": 4,
    "fastq.bench": 4,
    "fastq.cli": 4,
    "fastq.contrib": 4,
    "fastq.beat": 4,
}

#: Upward imports at run time not untangled yet: (importer, imported) -> why it is still there.
#: The test fails on an entry no longer needed, so this list only shrinks.
ALLOWED: dict[tuple[str, str], str] = {
    ("fastq.app", "fastq.cli"): "app.start()/worker_main() are Celery's way to run the command "
    "line from a script (python proj.py worker): by design, imported only when called",
}

#: Layers 1 and 2 are built from a URL and conf, never from what is above them: not even their
#: type-only imports name a higher layer. The ones that still do, and why.
ALLOWED_TYPE_ONLY: dict[tuple[str, str], str] = {}


def layer(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS and (end > 1 or prefix == module):
            return LAYERS[prefix]
    raise AssertionError(f"{module} has no layer: add it to LAYERS (and to DESIGN.md)")


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["fastq", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    base = PACKAGE / relative
    return (
        base.with_suffix(".py").is_file()
        or (base / "__init__.py").is_file()
        or (name == "fastq._core")
    )


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(module: str, path: Path) -> tuple[set[str], set[str]]:
    """The fastq modules ``module`` imports: at run time (wherever the import is) and only
    inside ``if TYPE_CHECKING:``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: tuple[set[str], set[str]] = (set(), set())

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for statement in node.body:
                visit(statement, True)
            for statement in node.orelse:
                visit(statement, type_only)
            return
        into = found[1] if type_only else found[0]
        if isinstance(node, ast.Import):
            into.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]  # level 1: this package
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                into.add(candidate if is_module(candidate) else base)
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(ast.parse(path.read_text(), str(path)), False)
    ours = [{n for n in names if n == "fastq" or n.startswith("fastq.")} for names in found]
    return ours[0], ours[1] - ours[0]


def run_time_imports(module: str, path: Path) -> set[str]:
    return imports(module, path)[0]


def upward_imports() -> dict[tuple[str, str], str]:
    found = {}
    for module, path in modules():
        for imported in run_time_imports(module, path):
            if layer(imported) > layer(module):
                found[(module, imported)] = f"layer {layer(module)} -> {layer(imported)}"
    return found


def test_every_module_has_a_layer() -> None:
    for module, _ in modules():
        layer(module)


def test_no_module_imports_a_higher_layer_at_run_time() -> None:
    upward = upward_imports()
    unexpected = {pair: how for pair, how in upward.items() if pair not in ALLOWED}
    assert not unexpected, "imports from a lower layer to a higher one:\n" + "\n".join(
        f"  {a} imports {b} ({how})" for (a, b), how in sorted(unexpected.items())
    )


def test_the_allow_list_only_holds_imports_still_there() -> None:
    stale = sorted(set(ALLOWED) - set(upward_imports()))
    assert not stale, f"no longer imported upward, remove from ALLOWED: {stale}"


def type_only_upward_imports() -> set[tuple[str, str]]:
    return {
        (module, imported)
        for module, path in modules()
        if layer(module) <= 2
        for imported in imports(module, path)[1]
        if layer(imported) > layer(module)
    }


def test_layers_1_and_2_do_not_name_a_higher_layer_even_for_types() -> None:
    found = type_only_upward_imports()
    unexpected = sorted(found - set(ALLOWED_TYPE_ONLY))
    assert not unexpected, f"type-only imports from layers 1-2 upward: {unexpected}"
    stale = sorted(set(ALLOWED_TYPE_ONLY) - found)
    assert not stale, f"no longer imported, remove from ALLOWED_TYPE_ONLY: {stale}"


def test_the_walker_sees_function_level_imports_and_skips_type_checking(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from fastq import errors\n"
        "if TYPE_CHECKING:\n"
        "    from fastq.app import App\n"
        "def f():\n"
        "    from fastq.worker.loop import x\n"
        "    import fastq.cli\n"
    )
    assert imports("fastq.probe", source) == (
        {"fastq.errors", "fastq.worker.loop", "fastq.cli"},
        {"fastq.app"},
    )
