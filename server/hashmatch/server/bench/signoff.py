"""`hashmatch bench signoff`: measure a deployment against declared service levels and
write a report an operator can sign.

Without --target it measures a temporary local server (`hashmatch serve` on 127.0.0.1,
an OS-chosen port, a temporary data folder) loaded with a deterministic synthetic list
of --entries entries, once per --workers count. With --target it measures that address
with the given platform token; list load, retraction and correctness need a hotline
token too (--hotline-token), and memory is measured only for local servers.

Every load loop is bounded by its duration and a call budget; the whole run is bounded
by the sweep's size (modes x concurrency levels x worker counts x duration).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SLO_HELP = "service level NAME=VALUE (repeatable); see `hashmatch bench slos`"


def add_parser(sub: Any) -> None:
    """Adds `bench signoff` and `bench slos` to the `hashmatch` command's subparsers."""
    bench = sub.add_parser("bench", help="measure a deployment: throughput sign-off")
    actions = bench.add_subparsers(required=True, metavar="ACTION")
    p = actions.add_parser(
        "signoff",
        help="measure throughput, latency, load, retraction, memory and correctness; "
        "write a report with PASS/FAIL per service level",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the report")
    p.add_argument("--target", help="HOST:PORT to measure (default: a temporary local server)")
    p.add_argument("--token", help="platform token for --target")
    p.add_argument(
        "--hotline-token",
        help="hotline token for --target: list load, "
        "retraction and correctness on a temporary list",
    )
    p.add_argument(
        "--keep-list",
        action="store_true",
        help="with --target: do not retire the synthetic list's entries afterwards",
    )
    p.add_argument(
        "--entries", type=int, default=100_000, help="synthetic list size (default 100,000)"
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the synthetic list and queries")
    p.add_argument("--slo", action="append", default=[], metavar="NAME=VALUE", help=SLO_HELP)
    p.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="local servers' worker counts to measure, e.g. 1 2 (default 1)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=2.0,
        help="measured seconds per load cell (default 2, at most 60)",
    )
    p.add_argument("--warmup", type=float, default=0.3, help="unmeasured seconds per cell")
    p.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 4, 16],
        help="calls (or streams) in flight to sweep (default 1 4 16; at most 64)",
    )
    p.add_argument(
        "--slo-concurrency",
        type=int,
        help="concurrency at which latency levels are checked (default: the lowest)",
    )
    p.add_argument(
        "--modes",
        nargs="+",
        default=["unary", "batch", "stream"],
        choices=["unary", "batch", "stream"],
    )
    p.add_argument("--batch-size", type=int, default=1_000, help="items per MatchBatch")
    p.add_argument("--retractions", type=int, default=20, help="retraction probes per server")
    p.add_argument("--client-procs", type=int, default=2, help="load-generating processes")
    p.set_defaults(run=run)

    p = actions.add_parser("slos", help="list the service-level names --slo accepts")
    p.set_defaults(run=_list_slos)


def _list_slos(args: argparse.Namespace) -> int:
    from hashmatch.server.bench.slo import DEFAULT_SLOS, SLOS

    for s in SLOS.values():
        default = f" (default {DEFAULT_SLOS[s.name]:g})" if s.name in DEFAULT_SLOS else ""
        print(f"{s.name:24} {s.bound} [{s.unit}] {s.meaning}{default}")
    return 0


class _Progress:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {text}", file=sys.stderr, flush=True)


def _check_args(args: argparse.Namespace) -> str | None:
    if args.target and not args.token:
        return "--target needs --token (a platform token)"
    if not args.target and (args.token or args.hotline_token):
        return "--token and --hotline-token are for --target only"
    if args.entries < 100 or args.entries > 100_000_000:
        return "--entries must be between 100 and 100,000,000"
    if any(c < 1 or c > 64 for c in args.concurrency):
        return "--concurrency levels must be 1-64"
    if any(w < 1 or w > 64 for w in args.workers):
        return "--workers counts must be 1-64"
    if not 0 < args.duration <= 60 or not 0 <= args.warmup <= 10:
        return "--duration must be in (0, 60] and --warmup in [0, 10]"
    if not 1 <= args.batch_size <= 10_000:
        return "--batch-size must be 1-10,000"
    if not 1 <= args.retractions <= 1000:
        return "--retractions must be 1-1,000"
    return None


def run(args: argparse.Namespace) -> int:
    from hashmatch.server.bench import slo

    problem = _check_args(args)
    if problem is None:
        try:
            declared = slo.parse(args.slo)
        except slo.SloError as exc:
            problem = str(exc)
    if problem is not None:
        print(f"hashmatch bench signoff: {problem}", file=sys.stderr)
        return 2
    defaults_used = not declared
    if defaults_used:
        declared = dict(slo.DEFAULT_SLOS)
    args.concurrency = sorted(set(args.concurrency))
    if args.slo_concurrency is None:
        args.slo_concurrency = args.concurrency[0]
    elif args.slo_concurrency not in args.concurrency:
        args.concurrency = sorted({*args.concurrency, args.slo_concurrency})
    args.workers = list(dict.fromkeys(args.workers))
    args.out.mkdir(parents=True, exist_ok=True)
    results = _measure(args)
    return _finish(args, results, declared, defaults_used)


def _new_results(args: argparse.Namespace) -> dict[str, Any]:
    from hashmatch.server.bench import machine

    return {
        "schema": "hashmatch.signoff/1",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "hashmatch bench signoff " + shlex.join(_redacted(sys.argv[1:])),
        "target": args.target or "local",
        "config": {
            "entries": args.entries,
            "seed": args.seed,
            "workers": args.workers if not args.target else None,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "slo_concurrency": args.slo_concurrency,
            "modes": args.modes,
            "batch_size": args.batch_size,
            "retractions": args.retractions,
            "client_procs": args.client_procs,
        },
        **machine.describe(),
        "lists": [],
        "servers": [],
        "cells": [],
        "list_load": None,
        "retraction": [],
        "memory": None,
        "correctness": [],
        "notes": [],
    }


def _redacted(argv: Sequence[str]) -> list[str]:
    out, hide = [], False
    for a in argv[2:] if list(argv[:2]) == ["bench", "signoff"] else argv:
        if hide:
            out.append("***")
            hide = False
            continue
        if a in ("--token", "--hotline-token"):
            hide = True
        elif a.startswith(("--token=", "--hotline-token=")):
            a = a.split("=", 1)[0] + "=***"
        out.append(a)
    return out


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    from hashmatch.server.bench import corpus
    from hashmatch.server.bench.load import LoadRunner

    say = _Progress()
    results = _new_results(args)
    results["t0"] = time.perf_counter()
    configs = 1 if args.target else len(args.workers)
    synthetic = corpus.build(args.entries, args.seed, retractions=args.retractions * configs)
    say(f"synthetic list: {args.entries:,} entries, seed {args.seed}")
    with LoadRunner(args.client_procs) as runner:
        if args.target:
            _measure_remote(args, synthetic, runner, results, say)
        else:
            _measure_local(args, synthetic, runner, results, say)
    return results


def _sweep(args, runner, target, listed, workers, results, say) -> None:  # type: ignore[no-untyped-def]
    from hashmatch.server.bench.load import CellSpec

    for mode in args.modes:
        for c in args.concurrency:
            spec = CellSpec(mode, c, args.duration, args.warmup, args.batch_size)
            cell = runner.run(target, spec, listed, seed=args.seed, workers=workers)
            results["cells"].append(cell.to_json())
            lat = cell.latency_ms
            say(
                f"  {mode:6} c={c:<3} {cell.hashes_per_s:>11,.0f} hashes/s "
                f"{cell.calls_per_s:>9,.0f} calls/s  p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} ms"
                f"  errors {cell.errors}"
            )


def _correctness(address, token, synthetic, workers, results, say) -> None:  # type: ignore[no-untyped-def]
    from hashmatch.server.bench import probes

    cases = probes.check_corpus(address, token, synthetic.cases)
    wrong = [c for c in cases if not c.ok]
    results["correctness"].append(
        {
            "workers": workers,
            "cases": len(cases),
            "correct": len(cases) - len(wrong),
            "failures": [c.__dict__ for c in wrong],
            "all": [c.__dict__ for c in cases],
        }
    )
    say(f"  boundary corpus: {len(cases) - len(wrong)}/{len(cases)} correct")


def _retraction(args, address, tokens, name, entries, workers, results, say) -> None:  # type: ignore[no-untyped-def]
    from hashmatch.server.bench import probes

    r = probes.retraction_visibility(
        address,
        tokens["hotline"],
        tokens["platform"],
        name,
        entries,
        label=f"retract-w{workers}",
    )
    results["retraction"].append({"workers": workers, **r.to_json()})
    s = r.summary()
    say(
        f"  retraction: p50 {s['visible_p50_ms']:.1f} ms, p99 {s['visible_p99_ms']:.1f} ms "
        f"({r.timeouts} timed out)"
    )


def _measure_local(args, synthetic, runner, results, say) -> None:  # type: ignore[no-untyped-def]
    from hashmatch.server.bench import local, probes
    from hashmatch.server.bench.load import Target

    name = "signoff"
    with tempfile.TemporaryDirectory(prefix="hashmatch-signoff-") as tmp:
        data = Path(tmp) / "data"
        tokens = local.create_tenants(data)
        # A last restart with the first worker count on the loaded list: restart time and
        # steady-state memory (indexes rebuilt from LMDB, no bulk-load garbage).
        restarts = [*args.workers, args.workers[0]]
        before: dict[str, int] = {}
        after_load: dict[str, int] = {}
        for index, workers in enumerate(restarts):
            measure_load = index < len(args.workers)
            server = local.LocalServer(data, workers, log_path=Path(tmp) / f"server-{index}.log")
            server.start()
            try:
                say(
                    f"server with {workers} worker(s) on {server.address} "
                    f"(started in {server.start_seconds:.1f} s)"
                )
                info = {
                    "workers": workers,
                    "address": server.address,
                    "start_seconds": server.start_seconds,
                    "list_loaded_at_start": index > 0,
                }
                if index == 0:
                    time.sleep(0.3)
                    before = probes.rss(server.pid)
                    load = probes.load_list(server.address, tokens["hotline"], name, synthetic)
                    results["list_load"] = load.to_json()
                    results["lists"].append(
                        {
                            "name": name,
                            "entries": synthetic.size,
                            "counts": load.counts,
                            "version": load.version,
                        }
                    )
                    say(
                        f"  list load: {synthetic.size:,} entries in {load.seconds:.2f} s "
                        f"({load.entries_per_s:,.0f}/s) through UploadChanges"
                    )
                    time.sleep(0.5)
                    after_load = probes.rss(server.pid)
                else:
                    time.sleep(0.3)
                    info["rss_at_start"] = probes.rss(server.pid)
                if index == len(restarts) - 1:
                    results["memory"] = _memory(
                        before, after_load, info["rss_at_start"], synthetic.size, workers
                    )
                    say(
                        f"  memory: {results['memory']['heap_bytes_per_entry']:.0f} B/entry "
                        f"heap per serving process"
                    )
                results["servers"].append(info)
                if not measure_load:
                    continue
                _correctness(server.address, tokens["platform"], synthetic, workers, results, say)
                target = Target(server.address, tokens["platform"])
                _sweep(args, runner, target, synthetic.sample, workers, results, say)
                probe = synthetic.retractable[
                    index * args.retractions : (index + 1) * args.retractions
                ]
                _retraction(args, server.address, tokens, name, probe, workers, results, say)
            finally:
                server.stop()


def _memory(
    before: dict[str, int],
    after_load: dict[str, int],
    restarted: dict[str, int],
    entries: int,
    workers: int,
) -> dict[str, Any]:
    def per_entry(after: dict[str, int], key: str) -> float:
        return (after[key] - before[key]) / entries / workers

    return {
        "rss_before": before,
        "rss_after_load": after_load,
        "rss_after_restart": restarted,
        "workers": workers,
        "heap_bytes_per_entry": per_entry(restarted, "RssAnon"),
        "rss_bytes_per_entry": per_entry(restarted, "VmRSS"),
        "heap_bytes_per_entry_after_load": per_entry(after_load, "RssAnon"),
        "note": "RSS summed over the server's processes: empty (before the load), 0.5 s after "
        "the bulk load, and after a restart on the loaded list (indexes rebuilt from LMDB: the "
        "steady state the figures use), minus the empty server, divided by entries and by "
        "serving processes; heap is RssAnon (the in-memory indexes), RSS adds the mapped "
        "LMDB pages (RssFile)",
    }


def _measure_remote(args, synthetic, runner, results, say) -> None:  # type: ignore[no-untyped-def]
    from hashmatch.server.bench import probes
    from hashmatch.server.bench.load import Target

    if not probes.healthy(args.target):
        raise SystemExit(f"hashmatch bench signoff: {args.target} does not answer health checks")
    results["servers"].append({"workers": None, "address": args.target})
    results["notes"].append("memory per entry is measured only for local servers (/proc)")
    listed: list[Any] = []
    name = "signoff-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    tokens = {"platform": args.token, "hotline": args.hotline_token}
    if args.hotline_token:
        load = probes.load_list(args.target, args.hotline_token, name, synthetic)
        results["list_load"] = load.to_json()
        results["lists"].append(
            {
                "name": name,
                "entries": synthetic.size,
                "counts": load.counts,
                "version": load.version,
            }
        )
        say(f"list load: {synthetic.size:,} entries in {load.seconds:.2f} s into {name}")
        listed = synthetic.sample
        _correctness(args.target, args.token, synthetic, None, results, say)
    else:
        results["notes"].append(
            "no --hotline-token: list load, retraction and the boundary corpus were skipped; "
            "the load sweep's queries are random hashes (all misses)"
        )
    _sweep(args, runner, Target(args.target, args.token), listed, None, results, say)
    if args.hotline_token:
        _retraction(args, args.target, tokens, name, synthetic.retractable, None, results, say)
        if args.keep_list:
            results["notes"].append(f"the synthetic list {name} was kept on the target")
        else:
            seconds = probes.retire_all(args.target, args.hotline_token, name, synthetic)
            results["notes"].append(
                f"every entry of the synthetic list {name} was retired afterwards "
                f"({seconds:.1f} s); the empty list remains (there is no DeleteList)"
            )


# --- summary and report -------------------------------------------------------------------


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The flat figures every service-level name refers to."""
    cells = results["cells"]
    c_slo = results["config"]["slo_concurrency"]
    first = results["servers"][0]["workers"] if results["servers"] else None
    fig: dict[str, Any] = {}
    peaks: dict[str, Any] = {}

    def at(mode: str) -> dict[str, Any] | None:
        for c in cells:
            if c["mode"] == mode and c["concurrency"] == c_slo and c["workers"] == first:
                return c
        return None

    for mode in ("unary", "batch", "stream"):
        cell = at(mode)
        if cell is not None:
            lat = cell["latency_ms"]
            if mode == "unary":
                fig["unary_p50_ms"] = lat["p50"]
                fig["unary_p999_ms"] = lat["p999"]
            fig[f"{mode}_p99_ms"] = lat["p99"]
        mode_cells = [c for c in cells if c["mode"] == mode]
        if mode_cells:
            best = max(mode_cells, key=lambda c: c["hashes_per_s"])
            peaks[mode] = {
                "workers": best["workers"],
                "concurrency": best["concurrency"],
                "calls_per_s": best["calls_per_s"],
                "hashes_per_s": best["hashes_per_s"],
            }
            if mode == "unary":
                fig["unary_rps"] = best["calls_per_s"]
            else:
                fig[f"{mode}_hashes_per_s"] = best["hashes_per_s"]
    calls = sum(c["calls"] for c in cells)
    errors = sum(c["errors"] for c in cells)
    if calls + errors:
        fig["error_rate"] = errors / (calls + errors)
    if results["list_load"]:
        fig["list_load_s"] = results["list_load"]["seconds"]
        fig["list_load_entries_per_s"] = results["list_load"]["entries_per_s"]
    measured = [r for r in results["retraction"] if r["visible_ms"]]
    if measured:
        fig["retraction_p50_ms"] = max(r["visible_p50_ms"] for r in measured)
        fig["retraction_p99_ms"] = max(r["visible_p99_ms"] for r in measured)
        if any(r["timeouts"] for r in measured):
            fig["retraction_p99_ms"] = math.inf
    if results["memory"]:
        fig["memory_bytes_per_entry"] = results["memory"]["heap_bytes_per_entry"]
        fig["rss_bytes_per_entry"] = results["memory"]["rss_bytes_per_entry"]
    starts = [s["start_seconds"] for s in results["servers"] if s.get("list_loaded_at_start")]
    if starts:
        fig["server_start_s"] = max(starts)
    fig["peaks"] = peaks
    return fig


def _finish(
    args: argparse.Namespace, results: dict[str, Any], declared: dict[str, float], defaults: bool
) -> int:
    from hashmatch.server.bench import report, slo

    summary = summarize(results)
    if defaults:  # the baseline checks only what this kind of run can measure
        declared = {k: v for k, v in declared.items() if k in summary}
    rows = slo.evaluate(declared, summary)
    corr = results["correctness"]
    if corr:
        total = sum(c["cases"] for c in corr)
        correct = sum(c["correct"] for c in corr)
        status = "PASS" if total == correct else "FAIL"
    else:
        total = correct = 0
        status = "NOT_MEASURED"
    rows.append(
        {
            "name": "boundary_corpus",
            "bound": "all",
            "target": total,
            "measured": correct,
            "unit": "cases correct",
            "status": status,
            "meaning": "PDQ distance <= 31 matches, 32 and beyond does not; exact hits "
            "match, one-bit-off and unlisted hashes do not (always checked)",
        }
    )
    results["summary"] = summary
    results["slos"] = rows
    results["slos_defaulted"] = defaults
    results["verdict"] = slo.verdict(rows)
    out: Path = args.out
    results["versions"].setdefault("commit", report.git_commit())
    images, note = report.plots(out, results)
    if note:
        results["notes"].append(note)
    results["plots"] = [name for name, _ in images]
    results["wall_seconds"] = time.perf_counter() - results.pop("t0")
    if hasattr(os, "getloadavg"):
        results["machine"]["load_average_end"] = list(os.getloadavg())
    report.write_json(out / "results.json", results)
    doc = _document(results, images)
    (out / "report.md").write_text(doc.markdown())
    (out / "report.html").write_text(doc.html(out, "hashmatch throughput sign-off"))
    print(
        f"verdict {results['verdict']}; report in {out.resolve()} "
        f"({results['wall_seconds']:.0f} s)",
        file=sys.stderr,
    )
    return 0 if results["verdict"] == "PASS" else 1


def _samples(results: dict[str, Any], name: str) -> tuple[str, int | None]:
    """(percentile, samples behind it) for a percentile figure, else ("", None)."""
    quantile = next((q for q in ("p999", "p99", "p50") if f"_{q}_" in f"_{name}_"), "")
    if not quantile:
        return "", None
    label = quantile.replace("p999", "p99.9")
    if name.startswith("retraction_"):
        counts = [r["samples"] for r in results["retraction"] if r.get("visible_ms")]
        return label, min(counts) if counts else None
    mode = name.split("_", 1)[0]
    first = results["servers"][0]["workers"] if results["servers"] else None
    for c in results["cells"]:
        if (
            c["mode"] == mode
            and c["concurrency"] == results["config"]["slo_concurrency"]
            and c["workers"] == first
        ):
            return label, c["calls"]
    return label, None


def _rough(results: dict[str, Any], name: str) -> str:
    from hashmatch.server.bench.report import rough

    return rough(*_samples(results, name))


def _verdict_banner(d: Any, results: dict[str, Any]) -> None:
    from hashmatch.server.bench.report import fmt

    verdict = results["verdict"]
    failing = [r for r in results["slos"] if r["status"] == "FAIL"]
    missing = [r for r in results["slos"] if r["status"] == "NOT_MEASURED"]
    parts = []
    if failing:
        parts.append(
            "Failing: "
            + "; ".join(
                f"`{r['name']}` measured {fmt(r['measured'])} {r['unit']}, target "
                f"{'≤' if r['bound'] == 'max' else ('≥' if r['bound'] == 'min' else '')}"
                f"{fmt(r['target'])}"
                for r in failing
            )
            + "."
        )
    if missing:
        parts.append("Not measured: " + ", ".join(f"`{r['name']}`" for r in missing) + ".")
    if not parts:
        parts.append(f"All {len(results['slos'])} service levels met.")
    d.banner(verdict, f"Verdict: {verdict}", " ".join(parts))


def _setup(d: Any, results: dict[str, Any]) -> None:
    """Machine, commit and server settings: what the figures below were measured on."""
    from hashmatch.server.bench.report import fmt

    cfg = results["config"]
    m = results["machine"]
    v = results["versions"]
    d.h(2, "Machine, commit and settings")
    mem = f"{m['memory_bytes'] / 2**30:.1f} GiB" if m["memory_bytes"] else "unknown"
    d.table(
        ["machine and build", ""],
        [
            ["commit", v.get("commit") or "unknown (not a git checkout)"],
            ["CPU", m["cpu_model"]],
            ["cores", f"{m['logical_cores']} logical, {m['usable_cores']} usable"],
            ["memory", mem],
            ["OS", m["os"]],
            ["load average at start", ", ".join(f"{x:.2f}" for x in m["load_average"] or [])],
            ["load average at end", ", ".join(f"{x:.2f}" for x in m.get("load_average_end") or [])],
            *[[k, x or "n/a"] for k, x in v.items() if k != "commit"],
        ],
    )
    servers = ", ".join(
        f"{sv['workers'] if sv['workers'] is not None else 'target'} at {sv['address']}"
        + (f" (started in {fmt(sv['start_seconds'])} s)" if sv.get("start_seconds") else "")
        for sv in results["servers"]
    )
    d.table(
        ["server and run settings", ""],
        [
            ["target", results["target"]],
            ["servers (workers at address)", servers or "none"],
            *[[k, ", ".join(map(str, x)) if isinstance(x, list) else x] for k, x in cfg.items()],
        ],
    )


def _document(results: dict[str, Any], images: list[tuple[str, str]]) -> Any:
    from hashmatch.server.bench.report import MODE_UNITS, PLOTS_NEED, Doc, fmt, rough

    d = Doc()
    cfg = results["config"]
    s = results["summary"]
    d.h(1, "hashmatch throughput sign-off")
    _verdict_banner(d, results)
    d.p(
        f"Target `{results['target']}`, {cfg['entries']:,} list entries, started "
        f"{results['started_at']}, took {results['wall_seconds']:.0f} s. Command:"
    )
    d.code(results["command"])
    _setup(d, results)
    d.h(2, "Service levels")
    if results["slos_defaulted"]:
        d.p(
            "No `--slo` was given: the default baseline below was checked. Declare your own "
            "levels with `--slo NAME=VALUE`."
        )
    d.table(
        ["service level", "bound", "target", "measured", "unit", "result", "note"],
        [
            [
                r["name"],
                "≤" if r["bound"] == "max" else ("≥" if r["bound"] == "min" else "all"),
                fmt(r["target"]),
                fmt(r["measured"]),
                r["unit"],
                r["status"],
                _rough(results, r["name"]),
            ]
            for r in results["slos"]
        ],
    )
    d.h(2, "Summary")
    peaks = s.get("peaks", {})
    rows = []
    for key in ("unary_p50_ms", "unary_p99_ms", "unary_p999_ms", "batch_p99_ms", "stream_p99_ms"):
        if key in s:
            rows.append(
                [
                    key,
                    fmt(s[key]),
                    f"ms at concurrency {cfg['slo_concurrency']}",
                    _rough(results, key),
                ]
            )
    for mode, p in peaks.items():
        where = f"{p['workers']} worker(s), " if p["workers"] is not None else ""
        rows.append(
            [
                f"{mode} peak",
                fmt(p["hashes_per_s"] if mode != "unary" else p["calls_per_s"]),
                f"{MODE_UNITS[mode]} ({where}concurrency {p['concurrency']})",
                "",
            ]
        )
    for key, unit in (
        ("error_rate", "failed / all calls"),
        ("list_load_s", "s"),
        ("list_load_entries_per_s", "entries/s"),
        ("retraction_p50_ms", "ms"),
        ("retraction_p99_ms", "ms"),
        ("memory_bytes_per_entry", "bytes heap per entry per process"),
        ("rss_bytes_per_entry", "bytes RSS per entry per process"),
        ("server_start_s", "s to rebuild indexes and serve"),
    ):
        if key in s:
            rows.append([key, fmt(s[key]), unit, _rough(results, key)])
    d.table(["figure", "value", "unit", "note"], rows)
    if images:
        d.p(
            "Dash-dot red lines on the plots are the declared service levels; a dotted grey "
            "line marks the concurrency the latency levels are checked at."
        )
    else:
        d.p(f"No plots: {PLOTS_NEED}.")
    for name, caption in images:
        d.h(3, caption)
        d.image(name, caption)
    d.h(2, "Load sweep")
    d.p(
        f"Closed loop: at concurrency c, c calls (unary, batch) or c streams (each with up to "
        f"16 messages in flight) run back to back for {cfg['duration_s']:g} s after "
        f"{cfg['warmup_s']:g} s of warm-up, from {cfg['client_procs']} client processes on "
        f"this machine. One hash per query item, MD5/SHA-1/SHA-256/PDQ in turn, one in 100 "
        f"listed; MatchBatch carries {cfg['batch_size']:,} items."
    )
    d.table(
        [
            "workers",
            "mode",
            "c",
            "calls/s",
            "hashes/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors",
            "note",
        ],
        [
            [
                c["workers"] if c["workers"] is not None else "target",
                c["mode"],
                c["concurrency"],
                fmt(c["calls_per_s"]),
                fmt(c["hashes_per_s"]),
                fmt(c["latency_ms"]["p50"]),
                fmt(c["latency_ms"]["p90"]),
                fmt(c["latency_ms"]["p99"]),
                fmt(c["latency_ms"]["p999"]),
                fmt(c["latency_ms"]["max"]),
                c["errors"],
                rough("p99", c["calls"]),
            ]
            for c in results["cells"]
        ],
    )
    d.h(2, "Lists")
    if results["lists"]:
        d.table(
            ["list", "entries", "md5", "sha1", "sha256", "pdq", "version (batches)"],
            [
                [
                    x["name"],
                    x["entries"],
                    *(x["counts"].get(a, 0) for a in ("md5", "sha1", "sha256", "pdq")),
                    x["version"],
                ]
                for x in results["lists"]
            ],
        )
    if results["list_load"]:
        ll = results["list_load"]
        d.p(
            f"Bulk load through one UploadChanges call: {ll['entries']:,} entries in "
            f"{ll['batches']} atomic batches, {ll['seconds']:.2f} s "
            f"({ll['entries_per_s']:,.0f} entries/s), building the batches took "
            f"{ll['prepare_seconds']:.2f} s before the clock started."
        )
    else:
        d.p("No list was loaded.")
    if results["retraction"]:
        d.h(2, "Retraction visibility")
        d.p(
            "Each probe: check the entry matches on every poller, retire it with ApplyChanges, "
            "then poll Match on 4 separate connections until all answer NO_MATCH (5 s limit)."
        )
        d.table(
            ["workers", "probes", "p50 ms", "p99 ms", "max ms", "ack p50 ms", "timeouts", "note"],
            [
                [
                    r["workers"] if r["workers"] is not None else "target",
                    r["samples"],
                    fmt(r["visible_p50_ms"]),
                    fmt(r["visible_p99_ms"]),
                    fmt(r["visible_max_ms"]),
                    fmt(r["ack_p50_ms"]),
                    r["timeouts"],
                    rough("p99", r["samples"]),
                ]
                for r in results["retraction"]
            ],
        )
    if results["memory"]:
        m = results["memory"]
        d.h(2, "Memory")
        d.p(m["note"] + ".")
        d.table(
            ["", "VmRSS", "RssAnon", "RssFile", "processes"],
            [
                [
                    k,
                    fmt(m[k]["VmRSS"]),
                    fmt(m[k]["RssAnon"]),
                    fmt(m[k]["RssFile"]),
                    m[k]["processes"],
                ]
                for k in ("rss_before", "rss_after_load", "rss_after_restart")
            ],
        )
        rs = [sv for sv in results["servers"] if sv.get("rss_at_start")]
        if rs:
            d.p("RSS of servers started on the loaded list (indexes rebuilt from LMDB):")
            d.table(
                ["workers", "start s", "VmRSS", "RssAnon", "processes"],
                [
                    [
                        sv["workers"],
                        fmt(sv["start_seconds"]),
                        fmt(sv["rss_at_start"]["VmRSS"]),
                        fmt(sv["rss_at_start"]["RssAnon"]),
                        sv["rss_at_start"]["processes"],
                    ]
                    for sv in rs
                ],
            )
    d.h(2, "Matching correctness (boundary corpus)")
    if results["correctness"]:
        for c in results["correctness"]:
            who = f"{c['workers']} worker(s)" if c["workers"] is not None else "target"
            d.p(f"{who}: {c['correct']}/{c['cases']} cases correct.")
        d.table(
            ["case", "algorithm", "expected", "got", "ok"],
            [
                [x["name"], x["algorithm"], x["expected"], x["got"], "PASS" if x["ok"] else "FAIL"]
                for x in results["correctness"][0]["all"]
            ],
        )
    else:
        d.p("Not measured (no list of known content on the target).")
    if results["notes"]:
        d.h(2, "Notes")
        for n in results["notes"]:
            d.p("- " + n)
    d.p(
        "All figures, raw latencies percentiles per cell and every probe are in "
        "`results.json`. Clients and servers share this machine's cores, so the numbers are "
        "what one box does end to end."
    )
    return d
