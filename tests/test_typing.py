"""The typed task API (``Task[P, R]``, ``AsyncResult[R]``, ``Signature[R]``): mypy accepts
``tests/typecheck/check_task_api.py`` and still refuses what its ignores mark; at run time the
generics change nothing."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import typing
from pathlib import Path

from fastq import App, AsyncResult, Signature, Task

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "tests" / "typecheck" / "check_task_api.py"


def mypy(path: Path) -> subprocess.CompletedProcess[str]:
    # From the root: pyproject's mypy_path ("python") is relative to the working directory.
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_task_api_type_checks() -> None:
    run = mypy(CHECK)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Success: no issues found" in run.stdout


def test_mypy_refuses_a_wrong_argument_and_an_ignore_with_nothing_to_ignore(
    tmp_path: Path,
) -> None:
    # The negative control: without it the test above would pass if mypy saw fastq as Any (not
    # found, untyped), ignored the file or did not warn of unused ignores in it. The same module
    # name (tests.typecheck.check_task_api), so the same mypy settings apply.
    source = CHECK.read_text()
    wrong = source.count("\n") + 1
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "__init__.py").write_text("")
    control = tmp_path / "tests" / "typecheck" / CHECK.name
    control.parent.mkdir()
    control.write_text(source + 'add.delay("a", "b")\nadd.delay(1, 2)  # type: ignore[arg-type]\n')
    run = mypy(control)
    assert run.returncode == 1, run.stdout + run.stderr
    # Without the directory: mypy replays the errors it cached for the same text, with the
    # path of the file it first saw them in (an earlier run's tmp_path).
    errors = [line.rpartition("/")[2] for line in run.stdout.splitlines() if ": error:" in line]
    assert errors == [
        f'{CHECK.name}:{wrong}: error: Argument 1 to "delay" of "Task" has incompatible type '
        '"str"; expected "int"  [arg-type]',
        f'{CHECK.name}:{wrong}: error: Argument 2 to "delay" of "Task" has incompatible type '
        '"str"; expected "int"  [arg-type]',
        f'{CHECK.name}:{wrong + 1}: error: Unused "type: ignore" comment  [unused-ignore]',
    ], run.stdout


def test_the_generics_change_nothing_at_run_time() -> None:
    app = App("typing", broker="memory://", backend="memory://", set_as_current=False)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert isinstance(add, Task) and app.tasks[add.name] is add
    assert add(1, 2) == 3
    result = add.apply((1, 2))
    assert isinstance(result, AsyncResult) and result.get() == 3
    sig = add.s(1)
    assert isinstance(sig, Signature) and isinstance(sig, dict)
    assert json.loads(json.dumps(sig)) == {**sig, "args": [1]}
    by_name = Signature("typing.add", (1, 2))
    assert pickle.loads(pickle.dumps(by_name)) == by_name

    # Annotations evaluated at run time (get_type_hints, pydantic) subscript the classes as a
    # checker reads them: Task[P, R] is Task[P, R, R].
    def takes(task: Task[[int, int], int], sig: Signature[int]) -> AsyncResult[int]:
        return task.delay(1, 2)

    hints = typing.get_type_hints(takes)
    assert hints["task"] == Task[[int, int], int, int]
    assert typing.get_origin(hints["return"]) is AsyncResult
    assert typing.get_args(hints["sig"]) == (int,)
