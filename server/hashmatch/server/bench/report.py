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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODE_UNITS = {"unary": "calls/s", "batch": "hashes/s", "stream": "hashes/s"}


@dataclass
class Doc:
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

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
img{max-width:100%;border:1px solid #ddd}
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


def _inline(text: str) -> str:
    """Escapes text; `code` spans and **bold** become HTML."""
    out = html.escape(text)
    parts = out.split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


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


def plots(out: Path, results: dict[str, Any]) -> tuple[list[tuple[str, str]], str | None]:
    """Draws the PNGs; returns [(file name, caption)] and a note when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed (pip install 'hashmatch[bench]'): no plots"
    made: list[tuple[str, str]] = []
    cells = results["cells"]
    configs = sorted({c["workers"] for c in cells}, key=lambda w: (w is None, w))
    colors = plt.get_cmap("tab10")
    modes = [m for m in ("unary", "batch", "stream") if any(c["mode"] == m for c in cells)]
    plt.rcParams.update({"font.size": 11})

    def label(w: Any) -> str:
        return "target" if w is None else f"{w} worker{'s' if w != 1 else ''}"

    if modes:
        from matplotlib.ticker import FuncFormatter, NullFormatter

        plain = FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1000 else f"{v:g}")
        levels = sorted({c["concurrency"] for c in cells})
        fig, axes = plt.subplots(1, len(modes), figsize=(5.4 * len(modes), 4.8), squeeze=False)
        for ax, mode in zip(axes[0], modes, strict=True):
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
            ax.set_xscale("log", base=2)
            ax.set_xticks(levels)
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_title(f"{mode}")
            ax.set_xlabel(
                "streams in flight (offered load)"
                if mode == "stream"
                else "calls in flight (offered load)"
            )
            ax.set_ylabel(
                "ms per message (log scale)" if mode == "stream" else "ms per call (log scale)"
            )
            ax.grid(True, which="both", alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=9)
        fig.suptitle("Latency percentiles against offered load (closed loop)")
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        fig.savefig(out / "latency_vs_load.png", dpi=110)
        plt.close(fig)
        made.append(
            ("latency_vs_load.png", "Latency p50, p99 and p99.9 against calls or streams in flight")
        )

        fig, axes = plt.subplots(1, len(modes), figsize=(5.2 * len(modes), 4.2), squeeze=False)
        for ax, mode in zip(axes[0], modes, strict=True):
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
                    fontsize=10,
                )
            ax.set_title(f"{mode}: peak throughput")
            ax.set_ylabel("hashes per second")
            ax.yaxis.set_major_formatter(plain)
            ax.set_ylim(0, max([*peaks, 1.0]) * 1.18)
            ax.grid(True, axis="y", alpha=0.3)
        title = "Peak throughput against serving processes (workers)"
        if len(configs) == 1:
            title += " — one configuration measured (use --workers 1 2 for a sweep)"
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(out / "throughput_vs_workers.png", dpi=110)
        plt.close(fig)
        made.append(
            (
                "throughput_vs_workers.png",
                "Peak throughput (hashes/s) of each mode for each worker count",
            )
        )

        fig, axes = plt.subplots(1, len(modes), figsize=(5.2 * len(modes), 4.2), squeeze=False)
        for ax, mode in zip(axes[0], modes, strict=True):
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
            ax.set_xscale("log", base=2)
            ax.set_xticks(levels)
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_major_formatter(plain)
            ax.set_title(f"{mode}: throughput vs concurrency")
            ax.set_xlabel("calls or streams in flight")
            ax.set_ylabel("hashes per second")
            ax.set_ylim(bottom=0)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "throughput_vs_concurrency.png", dpi=110)
        plt.close(fig)
        made.append(
            (
                "throughput_vs_concurrency.png",
                "Throughput (hashes/s) against the number of calls or streams in flight",
            )
        )

    retraction = [r for r in results.get("retraction", []) if r.get("visible_ms")]
    if retraction:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for k, r in enumerate(retraction):
            v = sorted(r["visible_ms"])
            ax.step(
                v,
                [(i + 1) / len(v) for i in range(len(v))],
                where="post",
                color=colors(k),
                label=f"{label(r['workers'])}: visible everywhere",
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
        ax.set_xlabel("milliseconds after the retraction was sent")
        ax.set_ylabel("fraction of retractions")
        ax.set_ylim(0, 1.02)
        ax.set_xlim(left=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=9, loc="lower right")
        ax.set_title("Retraction visibility (cumulative)")
        fig.tight_layout()
        fig.savefig(out / "retraction.png", dpi=110)
        plt.close(fig)
        made.append(
            ("retraction.png", "Time until a retired entry answers NO_MATCH on every poller")
        )
    return made, None
