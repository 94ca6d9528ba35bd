"""``make bench``: every benchmark on loopback, a table, and bench/results/latest.json.

    python -m bench.run            # quick: under 6 minutes
    python -m bench.run --full     # full: under 20 minutes
    python -m bench.run --only ingest,fanout

Each benchmark module (``bench.ingest``, ``bench.geofences``, ``bench.fanout``, ``bench.browser``,
``bench.overview``, ``bench.track``, ``bench.trips``, ``bench.export``)
returns its figures; this collects them with the machine and the command that
produced them. See BENCHMARKS.md for what each figure means.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bench import common
from bench.common import Row

BENCHMARKS = ("ingest", "geofences", "fanout", "browser", "overview", "track", "trips", "export")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the benchmarks.")
    parser.add_argument("--full", action="store_true", help="the longer run (default: quick)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated benchmarks")
    arguments = parser.parse_args(argv)
    chosen = [name.strip() for name in arguments.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")

    mode = "full" if arguments.full else "quick"
    report: dict[str, Any] = {
        "command": "python -m bench.run " + shlex.join(sys.argv[1:] if argv is None else argv),
        "mode": mode,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": common.machine(),
        "results": {},
        "seconds": {},
    }
    table: list[Row] = []
    failed = False
    for name in chosen:
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name} ({mode})", flush=True)
        started = time.monotonic()
        try:
            figures = module.run(quick=not arguments.full)
        except Exception as exc:  # one broken benchmark must not hide the others
            failed = True
            report["results"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            table.append(Row(name, "failed", f"{type(exc).__name__}: {exc}"[:80]))
        else:
            report["results"][name] = figures
            table += module.rows(figures)
        report["seconds"][name] = round(time.monotonic() - started, 1)

    common.RESULTS.mkdir(parents=True, exist_ok=True)
    (common.RESULTS / "latest.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    _print(table, report)
    return 1 if failed else 0


def _print(table: list[Row], report: dict[str, Any]) -> None:
    widths = [
        max(
            len(getattr(row, field))
            for row in [*table, Row("benchmark", "figure", "value", "target")]
        )
        for field in ("benchmark", "figure", "value", "target")
    ]
    header = Row("benchmark", "figure", "value", "target")
    print()
    for row in [header, *table]:
        print(
            "  ".join(
                getattr(row, field).ljust(width)
                for field, width in zip(
                    ("benchmark", "figure", "value", "target"), widths, strict=True
                )
            ).rstrip()
        )
    machine = report["machine"]
    print(
        f"\n{machine['cpus']} cores ({machine['cpu_model']}), {machine['memory_gib']} GiB, Python {machine['python']}"
    )
    print(f"seconds per benchmark: {report['seconds']}; figures in bench/results/latest.json")


if __name__ == "__main__":
    raise SystemExit(main())
