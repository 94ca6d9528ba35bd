"""Benchmarks: ``make bench`` (quick) or ``make bench-full``; see BENCHMARKS.md."""
