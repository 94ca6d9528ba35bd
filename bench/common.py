"""What every benchmark shares: services, processes, resource sampling, tables.

A benchmark module exposes ``run(*, quick: bool) -> dict`` returning figures
that are JSON-serialisable, and ``rows(figures) -> list[Row]`` for the table
``bench.run`` prints. Everything runs on loopback and is bounded in count and
time.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests import support

ROOT = support.ROOT
PYTHON = support.PYTHON
RESULTS = ROOT / "bench" / "results"

free_port = support.free_port
wait_for_port = support.wait_for_port
running_redis = support.running_redis
scratch_postgres_database = support.scratch_postgres_database
base_env = support.base_env
daphne_command = support.daphne_command


@dataclass(frozen=True)
class Row:
    """One line of the summary table."""

    benchmark: str
    figure: str
    value: str
    target: str = ""


def machine() -> dict[str, object]:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank quantile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Usage:
    """CPU seconds and peak resident memory of a set of processes over a run."""

    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_rss_bytes: int = 0
    samples: list[int] = field(default_factory=list)

    @property
    def cpu_share(self) -> float:
        """Cores used on average (1.0 = one core busy the whole time)."""
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds else float("nan")


@contextlib.contextmanager
def measured(pids: Sequence[int], *, interval: float = 0.5) -> Iterator[Usage]:
    """Sample CPU time and memory of ``pids`` and their children while the block runs."""
    usage = Usage()
    processes = [psutil.Process(pid) for pid in pids]
    stop = threading.Event()

    def family() -> list[psutil.Process]:
        members: list[psutil.Process] = []
        for process in processes:
            with contextlib.suppress(psutil.Error):
                members += [process, *process.children(recursive=True)]
        return members

    def cpu() -> float:
        total = 0.0
        for member in family():
            with contextlib.suppress(psutil.Error):
                times = member.cpu_times()
                total += times.user + times.system
        return total

    def sample() -> None:
        while not stop.wait(interval):
            rss = 0
            for member in family():
                with contextlib.suppress(psutil.Error):
                    rss += member.memory_info().rss
            usage.samples.append(rss)
            usage.peak_rss_bytes = max(usage.peak_rss_bytes, rss)

    started, cpu_before = time.monotonic(), cpu()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield usage
    finally:
        usage.cpu_seconds = cpu() - cpu_before
        usage.wall_seconds = time.monotonic() - started
        stop.set()
        sampler.join()


def rss_bytes(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            for member in [process, *process.children(recursive=True)]:
                total += member.memory_info().rss
    return total


@contextlib.contextmanager
def background(
    args: Sequence[str], *, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with support.background(args, env=env, log=log) as process:
        yield process


def manage(
    args: Sequence[str], *, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return support.manage(args, env=env, timeout=timeout)


def run_with_django(
    module: str, args: Sequence[str], *, env: dict[str, str], timeout: float = 600
) -> Any:
    """Run ``python -m module args`` with Django set up on ``env``'s database and
    read the JSON its last line of output holds; its errors in the exception."""
    finished = subprocess.run(
        [PYTHON, "-m", module, *args],
        cwd=ROOT,
        env=env | {"DJANGO_SETTINGS_MODULE": "tracker_site.settings"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if finished.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed: {finished.stderr[-2000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def number(value: float, digits: int = 0) -> str:
    """A figure for the table: thousands separated, NaN as n/a."""
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.{digits}f}"
