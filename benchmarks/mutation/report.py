"""Per-module mutation scores and the surviving mutants, from the outputs of cargo-mutants
(mutants.out/*.txt) and of mutmut (the .meta files in each workspace's mutants/ folder).

    python benchmarks/mutation/report.py --rust OUT/mutants.out [RERUN/mutants.out] \
        --python WS [WS ...] > results.md

Score = killed / (killed + survived). A mutant that made the tests time out or crash counts as
killed (the suite noticed); one that does not build (Rust "unviable") or was never run does not
count either way. A Python mutant no selected test reached counts as a survivor.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

KILLED_CODES = {1, 3, 36, 24, -24, 152, 255, -11, -9}
SURVIVED_CODES = {0, 5, 33}


class Tally:
    def __init__(self) -> None:
        self.killed = 0
        self.survived: list[str] = []
        self.other = 0

    def score(self) -> str:
        judged = self.killed + len(self.survived)
        if judged == 0:
            return "n/a"
        return f"{100 * self.killed / judged:.1f} %"


def rust_tallies(outs: list[Path]) -> dict[str, Tally]:
    """Outcomes by mutant; a later folder (a rerun of some mutants) overrides an earlier."""
    outcome: dict[str, str] = {}
    for out in outs:
        for name, kind in [
            ("caught.txt", "killed"),
            ("timeout.txt", "killed"),
            ("missed.txt", "survived"),
            ("unviable.txt", "other"),
        ]:
            path = out / name
            if path.exists():
                for line in path.read_text().splitlines():
                    if line.strip():
                        outcome[line] = kind
    tallies: dict[str, Tally] = defaultdict(Tally)
    for line, kind in sorted(outcome.items()):
        tally = tallies["hashcore/" + line.split(":", 1)[0]]
        if kind == "killed":
            tally.killed += 1
        elif kind == "survived":
            tally.survived.append(line)
        else:
            tally.other += 1
    return tallies


def python_tallies(workspaces: Iterable[Path]) -> dict[str, Tally]:
    """Verdicts by mutant; where a WS-rerun folder exists beside a workspace (its survivors
    run again against the tests written for them), its verdicts overlay the first run's."""
    tallies: dict[str, Tally] = defaultdict(Tally)
    for workspace in workspaces:
        root = workspace / "mutants" / "src"
        rerun = workspace.with_name(workspace.name + "-rerun") / "mutants" / "src"
        for meta in sorted(root.rglob("*.py.meta")):
            module = "server/" + str(meta.relative_to(root))[: -len(".meta")]
            codes = json.loads(meta.read_text())["exit_code_by_key"]
            again = rerun / meta.relative_to(root)
            if again.exists():
                # A kill in either run counts; else the later verdict stands.
                later = json.loads(again.read_text())["exit_code_by_key"]
                codes |= {
                    k: v
                    for k, v in later.items()
                    if v is not None and codes.get(k) not in KILLED_CODES
                }
            if not codes:
                continue
            tally = tallies[module]
            for name, code in sorted(codes.items()):
                if code in KILLED_CODES:
                    tally.killed += 1
                elif code in SURVIVED_CODES:
                    tally.survived.append(name)
                else:
                    tally.other += 1
    return tallies


def table(title: str, tallies: dict[str, Tally]) -> list[str]:
    lines = [f"## {title}", "", "| module | killed | survived | not judged | score |"]
    lines.append("|---|---:|---:|---:|---:|")
    total = Tally()
    for module in sorted(tallies):
        t = tallies[module]
        lines.append(f"| {module} | {t.killed} | {len(t.survived)} | {t.other} | {t.score()} |")
        total.killed += t.killed
        total.survived += t.survived
        total.other += t.other
    lines.append(
        f"| **all** | {total.killed} | {len(total.survived)} | {total.other} | {total.score()} |"
    )
    return [*lines, ""]


def survivors(tallies: dict[str, Tally]) -> list[str]:
    lines = []
    for module in sorted(tallies):
        if tallies[module].survived:
            lines.append(f"### {module}")
            lines.append("")
            lines += ["- " + name for name in tallies[module].survived]
            lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rust", type=Path, nargs="*", default=[], help="cargo-mutants' mutants.out folders"
    )
    parser.add_argument("--python", type=Path, nargs="*", default=[], help="mutmut workspaces")
    args = parser.parse_args()
    rust = rust_tallies(args.rust)
    python = python_tallies(args.python)
    lines = ["# Mutation scores", ""]
    lines.append("Made by `scripts/mutation.sh` (benchmarks/mutation/README.md says how).")
    lines.append("")
    if rust:
        lines += table("hashcore (cargo-mutants)", rust)
    if python:
        lines += table("server (mutmut)", python)
    lines += ["## Surviving mutants", ""]
    lines += survivors(rust) + survivors(python)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
