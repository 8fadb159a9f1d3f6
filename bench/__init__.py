"""Side-by-side benchmarks (issue 9): ``python bench/run.py [--quick]``; see run.py."""

from __future__ import annotations
