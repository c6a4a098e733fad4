"""CPU seconds of a process tree, read from /proc: what a server spent while measured.

Shared by the load generators, so a server's CPU is counted the same way in every table.
"""

from __future__ import annotations

import os
from pathlib import Path


def process_tree_ticks(roots: list[int]) -> dict[int, int]:
    """utime+stime (clock ticks) of `roots` and all their descendants now alive, by pid."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on
        stats[int(entry.name)] = (int(rest[1]), int(rest[11]) + int(rest[12]))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, int] = {}
    todo = [p for p in roots if p in stats]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out[pid] = stats[pid][1]
        todo.extend(children.get(pid, []))
    return out
