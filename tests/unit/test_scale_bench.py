"""The scale benchmark's report judges a pass by its median and CPU time, so one slow pass on a busy machine
does not decide the verdict, and it shows every pass and the latencies' CPU share."""

from __future__ import annotations

import re

import pytest

from bench.scale_bench import PassCost, SizeFigures, report


def size(live: int, walls: list[float], cpus: list[float], latency: float) -> SizeFigures:
    figures = SizeFigures(live, {}, 50.0, 0, 0, 2, live, 3.0)
    figures.steady = [PassCost(wall, cpu, 20, 485, 1, 20) for wall, cpu in zip(walls, cpus, strict=True)]
    figures.latency = {name: latency for name in ("runs", "status", "metrics", "start")}
    figures.latency_cpu = {name: 0.004 for name in ("runs", "status", "metrics", "start")}
    figures.latency_emulators = {name: latency / 2 for name in ("runs", "status", "metrics", "start")}
    return figures


def test_one_slow_pass_moves_the_mean_ratio_but_not_the_median_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    small = size(1000, [0.20] * 7, [0.10] * 7, 0.010)
    large = size(10000, [0.22] * 6 + [2.0], [0.11] * 7, 0.040)
    report([small, large])
    out = capsys.readouterr().out
    wall = re.search(r"^  (PASS|MISS) wall time per reconcile pass: median ([\d.]+), mean ([\d.]+)$", out, re.MULTILINE)
    assert wall is not None, out
    assert wall.group(1) == "PASS" and float(wall.group(2)) == pytest.approx(1.1, abs=0.01)
    assert float(wall.group(3)) > 1.5
    assert re.search(r"^  PASS CPU time per reconcile pass: median 1\.10, mean 1\.10$", out, re.MULTILINE), out
    assert re.search(r"^  PASS requests per reconcile pass: median 1\.00, mean 1\.00$", out, re.MULTILINE), out
    assert "latency of start: 4.00 (this process's CPU: 1.00; emulators' CPU 5 -> 20 ms)" in out
    assert "0.22/0.110, 0.22/0.110, 0.22/0.110, 0.22/0.110, 0.22/0.110, 0.22/0.110, 2.00/0.110" in out


def test_a_pass_whose_cpu_time_grows_with_the_live_runs_misses(capsys: pytest.CaptureFixture[str]) -> None:
    report([size(1000, [0.20] * 7, [0.10] * 7, 0.010), size(10000, [0.40] * 7, [0.30] * 7, 0.010)])
    out = capsys.readouterr().out
    assert re.search(r"^  MISS CPU time per reconcile pass: median 3\.00", out, re.MULTILINE), out
    assert re.search(r"^  MISS wall time per reconcile pass: median 2\.00", out, re.MULTILINE), out
