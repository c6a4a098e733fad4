"""Writes the sign-off report: results.json, report.md, report.html and PNG plots.

The report is built once as a list of blocks (headings, paragraphs, tables, images) and
rendered twice, to Markdown and to a self-contained HTML page (plots embedded as data
URIs), so both always say the same.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODE_UNITS = {"unary": "calls/s", "batch": "hashes/s", "stream": "hashes/s"}
# Percentiles from fewer samples than this are flagged as rough in the tables.
SMALL_SAMPLE = 100
PLOTS_NEED = "plots need matplotlib: install the sign-off extra, pip install 'hashmatch[bench]'"


@dataclass
class Doc:
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def banner(self, status: str, title: str, detail: str) -> None:
        """The verdict, coloured by status in HTML, a quote in Markdown."""
        self.blocks.append(("banner", (status, title, detail)))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(("table", (list(header), [[_cell(c) for c in r] for r in rows])))

    def image(self, path: str, alt: str) -> None:
        self.blocks.append(("img", (path, alt)))

    def markdown(self) -> str:
        out: list[str] = []
        for kind, value in self.blocks:
            if kind == "h":
                out.append("#" * value[0] + " " + value[1])
            elif kind == "p":
                out.append(value)
            elif kind == "banner":
                _status, title, detail = value
                out.append(f"> **{title}**" + (f"\\\n> {detail}" if detail else ""))
            elif kind == "code":
                out.append("```\n" + value + "\n```")
            elif kind == "table":
                header, rows = value
                lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(r) + " |" for r in rows]
                out.append("\n".join(lines))
            elif kind == "img":
                out.append(f"![{value[1]}]({value[0]})")
        return "\n\n".join(out) + "\n"

    def html(self, base: Path, title: str) -> str:
        body: list[str] = []
        for kind, value in self.blocks:
            if kind == "h":
                body.append(f"<h{value[0]}>{html.escape(value[1])}</h{value[0]}>")
            elif kind == "p":
                body.append(f"<p>{_inline(value)}</p>")
            elif kind == "banner":
                status, title, detail = value
                body.append(
                    f"<div class='verdict {html.escape(_status_class(status) or 'OTHER')}'>"
                    f"<span class='verdict-title'>{html.escape(title)}</span>"
                    + (f"<span class='verdict-detail'>{_inline(detail)}</span>" if detail else "")
                    + "</div>"
                )
            elif kind == "code":
                body.append(f"<pre>{html.escape(value)}</pre>")
            elif kind == "table":
                header, rows = value
                cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                trs = [f"<tr>{cells}</tr>"]
                for r in rows:
                    tds = "".join(f"<td class='{_status_class(c)}'>{_inline(c)}</td>" for c in r)
                    trs.append(f"<tr>{tds}</tr>")
                body.append("<table>" + "".join(trs) + "</table>")
            elif kind == "img":
                path, alt = value
                data = base64.b64encode((base / path).read_bytes()).decode("ascii")
                body.append(
                    f"<figure><img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"
                    f"<figcaption>{html.escape(alt)}</figcaption></figure>"
                )
        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(body)
            + "</body></html>\n"
        )


CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f2f2f2}
td.PASS{background:#d9f2d9;font-weight:bold} td.FAIL{background:#f8d0d0;font-weight:bold}
td.NOT_MEASURED,td.INCOMPLETE{background:#fff1c2;font-weight:bold}
img{width:auto;max-width:100%;height:auto;border:1px solid #ddd}
figure{margin:1em 0}
figcaption{font-size:14px;color:#555}
.verdict{padding:14px 18px;margin:1em 0;border-radius:6px;border:2px solid;font-size:17px}
.verdict .verdict-title{display:block;font-size:26px;font-weight:bold;margin-bottom:4px}
.verdict.PASS{background:#d9f2d9;border-color:#2e8b3d;color:#134d1c}
.verdict.FAIL{background:#f8d0d0;border-color:#c0392b;color:#6b1209}
.verdict.INCOMPLETE,.verdict.OTHER{background:#fff1c2;border-color:#c99a00;color:#5c4500}
pre{background:#f6f6f6;padding:8px;overflow-x:auto}
code{background:#f6f6f6}
"""


def _cell(c: Any) -> str:
    if isinstance(c, bool):
        return "yes" if c else "no"
    if isinstance(c, int):
        return f"{c:,}"
    if isinstance(c, float):
        return fmt(c)
    return "" if c is None else str(c)


def _status_class(text: str) -> str:
    return text if text in ("PASS", "FAIL", "NOT_MEASURED", "INCOMPLETE") else ""


_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*(?!\*)")


def _inline(text: str) -> str:
    """Escapes text; `code` spans and **bold** become HTML.

    Code spans are literal (a masked `--token '***'` stays as typed), and ** only bolds
    when it is closed on the same text outside code, so no emphasis leaks into the page.
    """
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unclosed backtick is just a character
        parts[-2:] = [parts[-2] + "`" + parts[-1]]
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{html.escape(part)}</code>")
        else:
            out.append(_BOLD.sub(lambda m: f"<b>{m.group(1)}</b>", html.escape(part)))
    return "".join(out)


def rough(quantile: str, samples: int | None) -> str:
    """A warning when a percentile rests on too few samples to mean much, else ''."""
    if samples is None or samples >= SMALL_SAMPLE:
        return ""
    return f"{quantile} of {samples:,} samples: a rough figure"


def git_commit() -> str | None:
    """The commit of the source tree this package runs from, when it is a git checkout."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if done.returncode != 0:
            return None
        commit = done.stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def fmt(x: float | int | None, digits: int = 3) -> str:
    """A number for a table: thousands separators, about `digits` significant digits."""
    if x is None:
        return "n/a"
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    if isinstance(x, int) or (abs(x) >= 1000):
        return f"{x:,.0f}"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{min(decimals, 6)}f}"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.write_text(json.dumps(_json_safe(results), indent=2, sort_keys=False) + "\n")


# --- plots ------------------------------------------------------------------------------

# Figures are drawn at most this wide (inches, at DPI) so the HTML page shows them at natural
# size: 10 pt text is then about 14 px on screen.
FIG_WIDTH = 10.4
DPI = 100
LATENCY_SLOS = {"unary": ("unary_p50_ms", "unary_p99_ms", "unary_p999_ms")}
RATE_SLOS = {"unary": "unary_rps", "batch": "batch_hashes_per_s", "stream": "stream_hashes_per_s"}


def slo_targets(results: dict[str, Any]) -> dict[str, float]:
    """Declared service levels by name (target values), for lines on the plots."""
    out: dict[str, float] = {}
    for r in results.get("slos", []):
        t = r.get("target")
        if r.get("bound") in ("min", "max") and isinstance(t, int | float) and math.isfinite(t):
            out[r["name"]] = float(t)
    return out


def plots(out: Path, results: dict[str, Any]) -> tuple[list[tuple[str, str]], str | None]:
    """Draws the PNGs; returns [(file name, caption)] and a note when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    except ImportError:
        return [], PLOTS_NEED
    made: list[tuple[str, str]] = []
    cells = results["cells"]
    configs = sorted({c["workers"] for c in cells}, key=lambda w: (w is None, w))
    colors = plt.get_cmap("tab10")
    modes = [m for m in ("unary", "batch", "stream") if any(c["mode"] == m for c in cells)]
    targets = slo_targets(results)
    c_slo = results.get("config", {}).get("slo_concurrency")
    plt.rcParams.update(
        {
            "font.size": 12,
            "axes.titlesize": 13,
            "axes.labelsize": 12,
            "xtick.labelsize": 11,
            "ytick.labelsize": 11,
            "legend.fontsize": 10,
            "figure.titlesize": 14,
        }
    )
    plain = FuncFormatter(lambda v, _pos: f"{v:,.0f}" if abs(v) >= 1000 else f"{v:g}")

    def label(w: Any) -> str:
        return "target" if w is None else f"{w} worker{'s' if w != 1 else ''}"

    def grid(n: int, height: float) -> tuple[Any, list[Any]]:
        ncols = min(n, 2)
        nrows = math.ceil(n / ncols)
        width = FIG_WIDTH if ncols == 2 else FIG_WIDTH * 0.72
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, height * nrows), squeeze=False)
        flat = [ax for row in axes for ax in row]
        for ax in flat[n:]:
            ax.set_visible(False)
        return fig, flat[:n]

    def log_y(ax: Any) -> None:
        ax.set_yscale("log")
        # 1-2-5 ticks, all labelled in plain numbers: more than one label per decade.
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs="all"))
        ax.yaxis.set_minor_formatter(NullFormatter())

    def log2_x(ax: Any, levels: list[int]) -> None:
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels)
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(NullFormatter())

    def slo_line(ax: Any, name: str, unit: str, bound: str, color: str = "#c0392b") -> None:
        t = targets.get(name)
        if t is None:
            return
        ax.axhline(t, color=color, linewidth=1.6, linestyle="-.", zorder=1,
                   label=f"SLO {name} {bound} {fmt(t)} {unit}")  # fmt: skip

    if modes:
        levels = sorted({c["concurrency"] for c in cells})
        fig, axes = grid(len(modes), 4.6)
        for ax, mode in zip(axes, modes, strict=True):
            for k, w in enumerate(configs):
                rows = sorted(
                    (c for c in cells if c["mode"] == mode and c["workers"] == w),
                    key=lambda c: c["concurrency"],
                )
                if not rows:
                    continue
                x = [c["concurrency"] for c in rows]
                for q, style, marker in (("p50", "-", "o"), ("p99", "--", "s"), ("p999", ":", "^")):
                    ax.plot(
                        x,
                        [c["latency_ms"][q] for c in rows],
                        style,
                        marker=marker,
                        color=colors(k),
                        label=f"{label(w)} {q.replace('p999', 'p99.9')}",
                    )
            for name in dict.fromkeys((*LATENCY_SLOS.get(mode, ()), f"{mode}_p99_ms")):
                slo_line(ax, name, "ms", "≤")
            if c_slo is not None and any(n.startswith(mode) and n.endswith("_ms") for n in targets):
                ax.axvline(c_slo, color="#888", linewidth=1, linestyle=":", zorder=1)
            log2_x(ax, levels)
            log_y(ax)
            ax.set_title(mode)
            ax.set_xlabel(
                "streams in flight (offered load)"
                if mode == "stream"
                else "calls in flight (offered load)"
            )
            ax.set_ylabel("ms per message (log)" if mode == "stream" else "ms per call (log)")
            ax.grid(True, which="major", alpha=0.35)
            ax.grid(True, which="minor", alpha=0.12)
            slo_handles = [
                h for h, lb in zip(*ax.get_legend_handles_labels(), strict=True)
                if lb.startswith("SLO")
            ]  # fmt: skip
            if slo_handles:
                ax.legend(handles=slo_handles, loc="upper left", fontsize=10)
        handles, labels = [], []
        for h, lb in zip(*axes[0].get_legend_handles_labels(), strict=True):
            if not lb.startswith("SLO"):
                handles.append(h)
                labels.append(lb)
        ncol = min(len(labels), 3)
        legend_rows = math.ceil(len(labels) / max(ncol, 1))
        fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=10)
        fig.suptitle("Latency percentiles against offered load (closed loop)")
        bottom = min(0.3, (0.15 + 0.3 * legend_rows) / fig.get_figheight())
        fig.tight_layout(rect=(0, bottom, 1, 1))
        fig.savefig(out / "latency_vs_load.png", dpi=DPI)
        plt.close(fig)
        made.append(
            ("latency_vs_load.png", "Latency p50, p99 and p99.9 against calls or streams in flight")
        )

        fig, axes = grid(len(modes), 4.2)
        for ax, mode in zip(axes, modes, strict=True):
            peaks = []
            for w in configs:
                rates = [
                    c["hashes_per_s"] for c in cells if c["mode"] == mode and c["workers"] == w
                ]
                peaks.append(max(rates) if rates else 0.0)
            names = [label(w) for w in configs]
            bars = ax.bar(names, peaks, color=[colors(k) for k in range(len(configs))])
            for b, v in zip(bars, peaks, strict=True):
                ax.annotate(
                    fmt(v),
                    (b.get_x() + b.get_width() / 2, v),
                    ha="center",
                    va="bottom",
                    fontsize=11,
                )
            slo_line(ax, RATE_SLOS[mode], MODE_UNITS[mode], "≥")
            ax.set_title(f"{mode}: peak throughput")
            ax.set_ylabel("hashes per second")
            ax.yaxis.set_major_formatter(plain)
            top = max([*peaks, targets.get(RATE_SLOS[mode], 0.0), 1.0])
            ax.set_ylim(0, top * 1.18)
            ax.grid(True, axis="y", alpha=0.3)
            if RATE_SLOS[mode] in targets:
                ax.legend(loc="lower right", fontsize=10)
        title = "Peak throughput against serving processes (workers)"
        if len(configs) == 1:
            title += "\none configuration measured (use --workers 1 2 for a sweep)"
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(out / "throughput_vs_workers.png", dpi=DPI)
        plt.close(fig)
        made.append(
            (
                "throughput_vs_workers.png",
                "Peak throughput (hashes/s) of each mode for each worker count",
            )
        )

        fig, axes = grid(len(modes), 4.2)
        for ax, mode in zip(axes, modes, strict=True):
            for k, w in enumerate(configs):
                rows = sorted(
                    (c for c in cells if c["mode"] == mode and c["workers"] == w),
                    key=lambda c: c["concurrency"],
                )
                ax.plot(
                    [c["concurrency"] for c in rows],
                    [c["hashes_per_s"] for c in rows],
                    "-o",
                    color=colors(k),
                    label=label(w),
                )
            slo_line(ax, RATE_SLOS[mode], MODE_UNITS[mode], "≥")
            log2_x(ax, levels)
            ax.yaxis.set_major_formatter(plain)
            ax.set_title(f"{mode}: throughput vs concurrency")
            ax.set_xlabel("calls or streams in flight")
            ax.set_ylabel("hashes per second")
            ax.set_ylim(bottom=0)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "throughput_vs_concurrency.png", dpi=DPI)
        plt.close(fig)
        made.append(
            (
                "throughput_vs_concurrency.png",
                "Throughput (hashes/s) against the number of calls or streams in flight",
            )
        )

    retraction = [r for r in results.get("retraction", []) if r.get("visible_ms")]
    if retraction:
        fig, ax = plt.subplots(figsize=(FIG_WIDTH * 0.72, 4.4))
        for k, r in enumerate(retraction):
            v = sorted(r["visible_ms"])
            ax.step(
                v,
                [(i + 1) / len(v) for i in range(len(v))],
                where="post",
                color=colors(k),
                label=f"{label(r['workers'])}: visible everywhere ({len(v)} probes)",
            )
            a = sorted(r["ack_ms"])
            ax.step(
                a,
                [(i + 1) / len(a) for i in range(len(a))],
                where="post",
                linestyle=":",
                color=colors(k),
                label=f"{label(r['workers'])}: acknowledged",
            )
        top = max(max(r["visible_ms"]) for r in retraction)
        for name, y in (("retraction_p50_ms", 0.5), ("retraction_p99_ms", 0.99)):
            t = targets.get(name)
            if t is not None and t <= top * 3:  # a far-off target would squash the curves
                ax.axvline(t, color="#c0392b", linestyle="-.", linewidth=1.6,
                           label=f"SLO {name} ≤ {fmt(t)} ms")  # fmt: skip
                ax.axhline(y, color="#c0392b", linestyle=":", linewidth=0.8)
            elif t is not None:
                ax.text(0.02, 0.9 if y < 0.9 else 0.8, f"SLO {name} ≤ {fmt(t)} ms (off scale)",
                        transform=ax.transAxes, color="#c0392b", fontsize=10)  # fmt: skip
        ax.set_xlabel("milliseconds after the retraction was sent")
        ax.set_ylabel("fraction of retractions")
        ax.set_ylim(0, 1.02)
        ax.set_xlim(left=0)
        ax.xaxis.set_major_formatter(plain)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=10, loc="lower right")
        ax.set_title("Retraction visibility (cumulative)")
        fig.tight_layout()
        fig.savefig(out / "retraction.png", dpi=DPI)
        plt.close(fig)
        made.append(
            ("retraction.png", "Time until a retired entry answers NO_MATCH on every poller")
        )
    return made, None
