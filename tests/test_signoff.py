"""Smoke test of `hashmatch bench signoff`: a tiny list, very short cells, the report is
written and well-formed. No timing assertions: figures depend on the machine."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

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


# --- the report, rendered from hand-built results (no server, no timing) -------------------


def _results(verdict: str = "FAIL") -> dict[str, Any]:
    from hashmatch.server.bench import slo

    def cell(mode: str, c: int, calls: int) -> dict[str, Any]:
        per = 1000 if mode == "batch" else 1
        return {
            "mode": mode, "concurrency": c, "workers": 1, "seconds": 1.0, "calls": calls,
            "hashes": calls * per, "errors": 0, "calls_per_s": float(calls),
            "hashes_per_s": float(calls * per),
            "latency_ms": {"p50": 1.0 * c, "p90": 2.0 * c, "p99": 3.0 * c, "p999": 4.0 * c,
                           "mean": 1.5 * c, "max": 5.0 * c},
        }  # fmt: skip

    cells = [cell(m, c, 5000) for m in ("unary", "batch") for c in (1, 2, 4, 8)]
    cells[0]["calls"] = 40  # unary at c=1: a small sample
    # fmt: off
    results: dict[str, Any] = {
        "schema": "hashmatch.signoff/1",
        "started_at": "2026-01-01T00:00:00+00:00",
        "command": "hashmatch bench signoff --target h:1 --token '***' --workers 1",
        "target": "local",
        "config": {"entries": 2000, "seed": 1, "workers": [1], "duration_s": 1.0,
                   "warmup_s": 0.5, "concurrency": [1, 2, 4, 8], "slo_concurrency": 1,
                   "modes": ["unary", "batch"], "batch_size": 1000, "retractions": 20,
                   "client_procs": 1},
        "machine": {"cpu_model": "Test CPU", "logical_cores": 4, "usable_cores": 4,
                    "memory_bytes": 2**33, "os": "Linux", "hostname": "box",
                    "load_average": [0.1, 0.2, 0.3], "load_average_end": [0.1, 0.2, 0.3]},
        "versions": {"hashmatch": "0.1.0", "python": "3.11", "grpcio": "1.85"},
        "lists": [], "list_load": None, "memory": None, "correctness": [], "notes": [],
        "servers": [{"workers": 1, "address": "127.0.0.1:1", "start_seconds": 0.3,
                     "list_loaded_at_start": False}],
        "cells": cells,
        "retraction": [{"workers": 1, "samples": 20, "pollers": 4,
                        "visible_ms": [float(i) for i in range(1, 21)],
                        "ack_ms": [0.5 * i for i in range(1, 21)], "timeouts": 0,
                        "visible_p50_ms": 10.0, "visible_p99_ms": 20.0, "visible_max_ms": 20.0,
                        "ack_p50_ms": 5.0, "ack_p99_ms": 10.0}],
        "wall_seconds": 12.0,
    }
    # fmt: on
    summary = signoff_module().summarize(results)
    target = 2.0 if verdict == "FAIL" else 100.0  # unary p99 at c=1 is 3 ms
    declared = {"unary_p99_ms": target, "batch_hashes_per_s": 1000.0, "retraction_p99_ms": 1e3}
    results["summary"] = summary
    results["slos"] = slo.evaluate(declared, summary)
    results["slos_defaulted"] = False
    results["verdict"] = slo.verdict(results["slos"])
    return results


def signoff_module() -> Any:
    from hashmatch.server.bench import signoff as module

    return module


def _render(results: dict[str, Any], out: Path) -> tuple[str, str]:
    from hashmatch.server.bench import report

    out.mkdir(parents=True, exist_ok=True)
    images, note = report.plots(out, results)
    if note:
        results["notes"].append(note)
    doc = signoff_module()._document(results, images)
    return doc.markdown(), doc.html(out, "sign-off")


def test_report_opens_with_a_coloured_verdict_banner_then_the_setup(tmp_path: Path) -> None:
    md, page = _render(_results("FAIL"), tmp_path)
    body = page.split("<body>", 1)[1]
    banner = re.search(r"<div class='verdict FAIL'>(.*?)</div>", body, re.S)
    assert banner is not None, body[:500]
    assert "unary_p99_ms" in banner.group(1)  # the failing level is named
    assert "batch_hashes_per_s" not in banner.group(1)  # a passing one is not
    assert body.index("class='verdict") < body.index("<table")
    assert ".verdict.FAIL" in page and ".verdict.PASS" in page  # coloured by CSS
    slo_table = body.index("<th>service level</th>")
    for fact in ("Test CPU", "127.0.0.1:1", "slo_concurrency", "commit"):
        assert body.index(fact) < body.index("Service levels") < slo_table, fact
    assert md.index("Verdict") < md.index("Test CPU") < md.index("## Service levels")
    _, passing = _render(_results("PASS"), tmp_path / "pass")
    assert "<div class='verdict PASS'>" in passing


def test_masked_command_renders_literally(tmp_path: Path) -> None:
    md, page = _render(_results(), tmp_path)
    assert "--token &#x27;***&#x27;" in page or "--token '***'" in page
    for tag in ("strong", "b", "em", "i"):
        assert page.count(f"<{tag}>") == page.count(f"</{tag}>"), tag
    assert "--token '***'" in md


def test_inline_renderer_leaves_unpaired_and_code_emphasis_alone() -> None:
    from hashmatch.server.bench.report import _inline

    assert _inline("`a '***' b` and **bold**") == (
        "<code>a &#x27;***&#x27; b</code> and <b>bold</b>"
    )
    assert _inline("a ** b") == "a ** b"
    assert _inline("x ***") == "x ***"


def test_small_samples_are_flagged(tmp_path: Path) -> None:
    md, page = _render(_results(), tmp_path)
    assert "p99 of 20 samples: a rough figure" in page  # retraction p99 from 20 probes
    assert "p99 of 40 samples: a rough figure" in page  # unary p99 at c=1 from 40 calls
    assert "p99 of 20 samples: a rough figure" in md
    assert "p99 of 5,000 samples" not in page


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_plots_draw_service_levels_and_readable_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    lines: list[float] = []
    real = Axes.axhline

    def spy(self: Axes, y: float = 0, *args: Any, **kwargs: Any) -> Any:
        lines.append(y)
        return real(self, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "axhline", spy)
    results = _results()
    _, page = _render(results, tmp_path)
    assert 2.0 in lines  # unary p99 target on the latency plot
    assert 1000.0 in lines  # batch hashes/s target on the throughput plots
    for name in (*PLOTS, "retraction.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "max-width:100%" in page and "width:auto" in page


def test_without_matplotlib_the_report_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    md, page = _render(_results(), tmp_path)
    assert "hashmatch[bench]" in md and "plots" in md
    assert "data:image/png" not in page
