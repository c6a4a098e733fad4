"""Smoke test of `hashmatch bench signoff`: a tiny list, very short cells, the report is
written and well-formed. No timing assertions: figures depend on the machine."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

HASHMATCH = Path(sys.executable).parent / "hashmatch"
PLOTS = ("latency_vs_load.png", "throughput_vs_workers.png", "throughput_vs_concurrency.png")


def signoff(*args: str) -> subprocess.CompletedProcess[str]:
    if not HASHMATCH.exists():
        pytest.skip("the hashmatch command is not installed in this environment")
    return subprocess.run(
        [str(HASHMATCH), "bench", "signoff", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_signoff_writes_a_well_formed_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = signoff(
        "--entries", "2000", "--duration", "0.3", "--warmup", "0.1",
        "--concurrency", "1", "2", "--retractions", "3", "--client-procs", "1",
        "--slo", "unary_p99_ms=1000000", "--slo", "batch_hashes_per_s=1",
        "--slo", "memory_bytes_per_entry=1e9",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr  # 0 PASS, 1 FAIL: both wrote a report
    for name in ("report.md", "report.html", "results.json"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["verdict"] in ("PASS", "FAIL", "INCOMPLETE")
    rows = {r["name"]: r for r in results["slos"]}
    assert set(rows) == {"unary_p99_ms", "batch_hashes_per_s", "memory_bytes_per_entry",
                         "boundary_corpus"}  # fmt: skip
    for row in rows.values():
        assert row["status"] in ("PASS", "FAIL", "NOT_MEASURED")
        assert {"target", "measured", "unit", "bound"} <= set(row)
    # Correctness is a fact, not a timing: the boundary corpus must be answered right.
    assert rows["boundary_corpus"]["status"] == "PASS"
    assert results["correctness"][0]["cases"] == results["correctness"][0]["correct"] > 0
    modes = {(c["mode"], c["concurrency"]) for c in results["cells"]}
    assert modes == {(m, c) for m in ("unary", "batch", "stream") for c in (1, 2)}
    assert results["list_load"]["entries"] == 2000
    assert results["lists"][0]["version"] >= 1
    assert results["memory"]["rss_after_restart"]["VmRSS"] > 0
    assert results["retraction"][0]["samples"] == 3
    assert results["machine"]["logical_cores"] >= 1
    assert results["versions"]["python"] and results["versions"]["grpcio"]
    md = (out / "report.md").read_text()
    assert "| boundary_corpus |" in md and "Verdict" in md
    html = (out / "report.html").read_text()
    assert html.startswith("<!doctype html>") and "boundary_corpus" in html
    if importlib.util.find_spec("matplotlib") is not None:
        for name in PLOTS:
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
            assert name in md
        assert "data:image/png;base64," in html


def test_unknown_service_level_is_an_error(tmp_path: Path) -> None:
    done = signoff("--slo", "unary_p42_ms=1", "--out", str(tmp_path / "r"))
    assert done.returncode == 2
    assert "unknown service level 'unary_p42_ms'" in done.stderr
    assert "unary_p99_ms" in done.stderr  # the known names are listed
    assert not (tmp_path / "r" / "results.json").exists()
