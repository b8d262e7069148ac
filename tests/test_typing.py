"""The typed task API (``Task[P, R]``, ``AsyncResult[R]``, ``Signature[R]``): mypy accepts
``tests/typecheck/check_task_api.py`` and still refuses what its ignores mark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    # found, untyped) or ignored the file. Same module name, so the same mypy settings apply.
    source = CHECK.read_text()
    wrong = source.count("\n") + 1
    control = tmp_path / CHECK.name
    control.write_text(source + 'add.delay("a", "b")\nadd.delay(1, 2)  # type: ignore[arg-type]\n')
    run = mypy(control)
    assert run.returncode == 1, run.stdout + run.stderr
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    assert errors == [
        f'{control}:{wrong}: error: Argument 1 to "delay" of "Task" has incompatible type "str"; '
        'expected "int"  [arg-type]',
        f'{control}:{wrong}: error: Argument 2 to "delay" of "Task" has incompatible type "str"; '
        'expected "int"  [arg-type]',
        f'{control}:{wrong + 1}: error: Unused "type: ignore" comment  [unused-ignore]',
    ], run.stdout
