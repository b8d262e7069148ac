"""The published artifacts installed as a user installs them: the manylinux wheel into a fresh venv
on a PATH without cargo, running the demo's tasks; the sdist built by pip with cargo.

``scripts/test.sh`` builds ``dist/`` (``scripts/package.sh``) before pytest; run alone, these
tests build it themselves when it is missing or older than a source file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import fastq
import pytest

from tests.processes import ROOT, WorkerProcess

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]
#: The tests of the installed wheel share one xdist worker, so its venv (a module fixture) is
#: built once; the sdist build (minutes of cold Rust) and the rest spread over the others.
same_venv = pytest.mark.xdist_group("installed-wheel")

DIST = ROOT / "dist"
VERSION = fastq.__version__
WHEEL_TAG = "cp310-abi3-manylinux_2_28_x86_64"
#: Newest glibc symbol version a manylinux_2_28 extension may need.
GLIBC_MAX = (2, 28)


class Dist(NamedTuple):
    wheel: Path
    sdist: Path


def _newest_source() -> float:
    files = [ROOT / name for name in ("pyproject.toml", "Cargo.toml", "Cargo.lock", "README.md")]
    for top in ("python", "rust"):
        files += [p for p in (ROOT / top).rglob("*") if p.suffix in {".py", ".pyi", ".rs", ".toml"}]
    return max(p.stat().st_mtime for p in files)


@pytest.fixture(scope="session")
def dist() -> Dist:
    wheel = DIST / f"fastq_worker-{VERSION}-{WHEEL_TAG}.whl"
    sdist = DIST / f"fastq_worker-{VERSION}.tar.gz"
    built = [p.stat().st_mtime for p in (wheel, sdist) if p.exists()]
    if len(built) < 2 or min(built) < _newest_source():
        subprocess.run(["bash", str(ROOT / "scripts" / "package.sh")], cwd=ROOT, check=True)
    return Dist(wheel, sdist)


def _fresh_venv(path: Path, python: str | Path = sys.executable) -> Path:
    """A new venv on the base interpreter (none of the dev venv's packages); returns its bin/."""
    subprocess.run([str(python), "-m", "venv", str(path)], check=True)
    return path / "bin"


def _other_pythons() -> list[Path]:
    """A CPython of each other minor version the abi3 wheel claims (3.10-3.13), where this
    machine has one (Debian's or pyenv's)."""
    found = []
    for minor in range(10, 14):
        if minor != sys.version_info.minor:
            candidates = [
                Path(f"/usr/bin/python3.{minor}"),
                *sorted(Path.home().glob(f".pyenv/versions/3.{minor}.*/bin/python3")),
            ]
            found += [p for p in candidates if p.exists()][:1]
    return found


def _pip_install(bin_dir: Path, target: Path, env: dict[str, str]) -> None:
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         str(target)],
        check=True,
        env=env,
    )  # fmt: skip


def _run(
    *argv: str | Path, env: dict[str, str], cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert not check or out.returncode == 0, f"{argv} failed:\n{out.stdout}{out.stderr}"
    return out


def _path_without_rust(bin_dir: Path) -> str:
    """``bin_dir`` then the current PATH less every directory with cargo or rustc (and the dev
    venv, whose maturin and zig would build Rust too)."""
    dev_bin = str(Path(sys.executable).parent)
    keep = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d
        and d != dev_bin
        and not any(word in d for word in ("cargo", "rustc", "rustup"))
        and shutil.which("cargo", path=d) is None
        and shutil.which("rustc", path=d) is None
    ]
    return os.pathsep.join([str(bin_dir), *keep])


class Installed(NamedTuple):
    bin: Path
    cwd: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def installed_wheel(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    tmp = tmp_path_factory.mktemp("wheel")
    bin_dir = _fresh_venv(tmp / "venv")
    path = _path_without_rust(bin_dir)
    assert shutil.which("cargo", path=path) is None
    assert shutil.which("rustc", path=path) is None
    # A user's directory: the demo's tasks and nothing of the source tree importable.
    cwd = tmp / "user"
    shutil.copytree(ROOT / "examples", cwd / "examples")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CARGO", "RUSTUP"))},
        "PATH": path,
        "VIRTUAL_ENV": str(tmp / "venv"),
        "PYTHONPATH": str(cwd),
        "PYTHONUNBUFFERED": "1",
        "FASTQ_BROKER_URL": f"sqlite:///{cwd}/fastq.db",
    }
    env.pop("FASTQ_RESULT_BACKEND", None)
    _pip_install(bin_dir, dist.wheel, env)
    yield Installed(bin_dir, cwd, env)


def test_wheel_is_manylinux_abi3_with_its_metadata(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as whl:
        names = whl.namelist()
        info = f"fastq_worker-{VERSION}.dist-info"
        meta = whl.read(f"{info}/METADATA").decode()
        wheel_file = whl.read(f"{info}/WHEEL").decode()
    assert f"Tag: {WHEEL_TAG}" in wheel_file
    assert f"{info}/licenses/LICENSE" in names
    assert "fastq/py.typed" in names and "fastq/_core.pyi" in names
    assert "Name: fastq-worker" in meta and "License-Expression: MIT" in meta
    extras = {
        line.split(": ")[1] for line in meta.splitlines() if line.startswith("Provides-Extra")
    }
    assert extras == {"bench", "compare", "hiredis", "metrics", "otel"}  # test, lint: groups
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist")]
    assert not any(tool in line for line in requires for tool in ("pytest", "ruff", "mypy"))


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs binutils' objdump")
def test_wheel_extension_needs_no_glibc_newer_than_2_28(dist: Dist, tmp_path: Path) -> None:
    with zipfile.ZipFile(dist.wheel) as whl:
        (so,) = [n for n in whl.namelist() if n.startswith("fastq/_core") and n.endswith(".so")]
        lib = whl.extract(so, tmp_path)
    symbols = subprocess.run(["objdump", "-T", lib], capture_output=True, text=True, check=True)
    versions = {(int(a), int(b)) for a, b in re.findall(r"GLIBC_(\d+)\.(\d+)", symbols.stdout)}
    assert versions and max(versions) <= GLIBC_MAX, sorted(versions)


@same_venv
def test_installed_wheel_reports_one_version(installed_wheel: Installed) -> None:
    py = installed_wheel.bin / "python"
    probe = (
        "import importlib.metadata as m, json, fastq, fastq._core as c;"
        "print(json.dumps([fastq.__file__, m.version('fastq-worker'), c.__version__]))"
    )
    out = _run(py, "-c", probe, env=installed_wheel.env, cwd=installed_wheel.cwd)
    module_file, dist_version, core_version = json.loads(out.stdout)
    assert Path(module_file).is_relative_to(installed_wheel.bin.parent)  # not the source tree
    assert dist_version == core_version == VERSION
    cli = _run(installed_wheel.bin / "fastq", "--version", env=installed_wheel.env)
    assert cli.stdout.strip() == f"fastq {VERSION}"


@same_venv
def test_installed_wheel_runs_the_demo_tasks_without_cargo(installed_wheel: Installed) -> None:
    bin_dir, cwd, env = installed_wheel
    argv = [str(bin_dir / "fastq"), "-A", "examples.tasks", "worker", "--concurrency", "2"]
    with WorkerProcess([*argv, "--loglevel", "INFO"], env=env, cwd=cwd) as worker:
        worker.wait_for_log("ready", timeout=60)
        sent = _run(bin_dir / "python", "-m", "examples.send", env=env, cwd=cwd, check=False)
        assert sent.returncode == 0, sent.stdout + sent.stderr + worker.log()
        assert worker.stop() == 0, worker.log()  # warm shutdown
    lines = sent.stdout.splitlines()
    assert "[0, 2, 4, 6, 8]" in lines[0]
    assert "[0, 1, 4, 9]" in lines[1]
    assert "succeeded after 1 retries" in lines[2]
    assert "raised ZeroDivisionError" in lines[3]


@pytest.mark.parametrize("python", _other_pythons(), ids=str)
def test_wheel_imports_on_other_pythons(dist: Dist, python: Path, tmp_path: Path) -> None:
    bin_dir = _fresh_venv(tmp_path / "venv", python)
    env = {**os.environ, "PATH": _path_without_rust(bin_dir)}
    _pip_install(bin_dir, dist.wheel, env)
    probe = "import fastq, fastq._core as c; print(c.loads(c.dumps({'v': c.__version__}))['v'])"
    assert _run(bin_dir / "python", "-c", probe, env=env, cwd=tmp_path).stdout.strip() == VERSION


def _unpacked_fresh(sdist: Path, into: Path) -> Path:
    """The sdist unpacked with its files dated now. Its archive dates are older than what the
    shared target dir last built, and cargo decides from dates whether fastq's own crates must
    compile again: unpacked by pip, an sdist of changed sources would link stale ones."""
    with tarfile.open(sdist) as archive:
        archive.extractall(into, filter="data")
    for path in into.rglob("*"):
        os.utime(path)
    (root,) = into.iterdir()
    return root


def test_sdist_builds_and_imports(dist: Dist, tmp_path: Path) -> None:
    bin_dir = _fresh_venv(tmp_path / "venv")
    cargo_home_bin = str(Path.home() / ".cargo" / "bin")
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", ""), cargo_home_bin]),
        # The shared cache, so only fastq's own crates compile again.
        "CARGO_TARGET_DIR": os.environ.get(
            "CARGO_TARGET_DIR", str(Path.home() / ".cache" / "fastq" / "target")
        ),
    }
    _pip_install(bin_dir, _unpacked_fresh(dist.sdist, tmp_path / "src"), env)
    probe = "import fastq._core as c; print(c.__version__)"
    out = _run(bin_dir / "python", "-c", probe, env=env, cwd=tmp_path)
    assert out.stdout.strip() == VERSION
