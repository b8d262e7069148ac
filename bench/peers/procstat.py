"""A system's worker processes, and the CPU time their whole process tree spends (from /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def _children(pid: int) -> list[int] | None:
    """Child pids from /proc/PID/task/*/children (cheap); None where the kernel lacks it."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tids:
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except FileNotFoundError:
            return None
        except OSError:
            continue
    return out


def descendants(roots: list[int]) -> dict[int, float]:
    """CPU seconds of every live process in the trees under ``roots`` (roots included). Reads
    only those processes' files, so sampling often costs the measured workers little CPU."""
    tree: dict[int, float] = {}
    frontier = list(roots)
    while frontier:
        pid = frontier.pop()
        st = _stat(pid)
        if st is None or pid in tree:
            continue
        tree[pid] = st[1]
        children = _children(pid)
        if children is None:
            return _descendants_by_scan(roots)
        frontier += children
    return tree


def _descendants_by_scan(roots: list[int]) -> dict[int, float]:
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                stats[int(entry)] = st
    tree, frontier = set(), [r for r in roots if r in stats]
    while frontier:
        pid = frontier.pop()
        tree.add(pid)
        frontier += [p for p, (ppid, _) in stats.items() if ppid == pid and p not in tree]
    return {pid: stats[pid][1] for pid in tree}


class WorkerTree:
    """The command(s) that start one system's workers, each in a process group of its own."""

    def __init__(self, argvs: list[list[str]], env: dict[str, str], cwd: Path, label: str) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.cpu_by_pid: dict[int, float] = {}
        self.samples: list[tuple[float, float]] = []
        self.started_at = time.time()
        for argv in argvs:
            fd, name = tempfile.mkstemp(prefix=f"fastq-peers-{label}-", suffix=".log")
            self.logs.append(Path(name))
            self.procs.append(
                subprocess.Popen(
                    argv,
                    env=env,
                    cwd=cwd,
                    stdout=fd,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
            os.close(fd)

    def exited(self) -> bool:
        return any(p.poll() is not None for p in self.procs)

    def sample(self) -> None:
        # A process that exited keeps the CPU it had at its last sample.
        self.cpu_by_pid.update(descendants([p.pid for p in self.procs]))
        self.samples.append((time.time(), sum(self.cpu_by_pid.values())))

    def cpu_since(self, when: float) -> float | None:
        """CPU seconds from the last sample taken at or before ``when`` to the latest sample."""
        before = [cpu for t, cpu in self.samples if t <= when]
        if not self.samples:
            return None
        return self.samples[-1][1] - (before[-1] if before else 0.0)

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for log in self.logs:
            text = log.read_text(errors="replace").rstrip().splitlines()
            out.append(f"  log {log}:\n" + "\n".join("    " + t for t in text[-lines:]))
        return "\n".join(out)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to each process group, SIGKILL to what is left after ``grace`` seconds."""
        for proc in self.procs:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.time() + grace
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc.pid, signal.SIGKILL)  # pool children left behind, if any
            proc.wait(5)

    def remove_logs(self) -> None:
        for log in self.logs:
            log.unlink(missing_ok=True)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
