"""``--cpu-affinity`` (``worker_cpu_affinity``): each prefork child on a CPU of its own.

Left to the scheduler, two children of a 2-CPU worker whose tasks wait on a round trip (a Redis
call, say) often wake on the same CPU while the other idles: a woken child is put near the
process that woke it. Pinned, child ``i`` runs on the ``i``-th CPU the worker may use (in turn
when there are more children than CPUs), as uWSGI's ``cpu-affinity`` does for its workers. Off by
default: it is for a host the worker has to itself, since another worker started with it pins
its children to the same CPUs.
"""

from __future__ import annotations

import logging
import os

from fastq.errors import ConfigurationError

log = logging.getLogger("fastq.worker")


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (its cpuset, not the machine's count), in order; refused
    where the OS cannot pin a process."""
    if not hasattr(os, "sched_setaffinity"):
        raise ConfigurationError("--cpu-affinity needs an OS that can pin a process (Linux)")
    return sorted(os.sched_getaffinity(0))


def child_cpu(index: int, cpus: list[int]) -> int:
    """The CPU of child ``index`` (a replaced child keeps its index, so its CPU)."""
    return cpus[index % len(cpus)]


def pin(cpu: int) -> None:
    """Pins the calling process to ``cpu``. A CPU it may no longer use (its cpuset changed since
    the worker started) is logged and the process runs unpinned: a child that died of it would
    be replaced by one that dies the same way."""
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        log.warning(
            "could not pin pool process %d to CPU %d (%s); it runs unpinned", os.getpid(), cpu, exc
        )
