"""Carries mutmut verdicts from an earlier workspace of a group into a new one, for the
functions whose source has not changed since, so a new snapshot need not run again what an
earlier one already judged.

    python benchmarks/mutation/carry.py OLD_WS NEW_WS

A mutant's name is its function's name plus a number, and mutmut numbers a function's
mutants in the same order for the same source, so where the function's hash (mutmut's
`function_hashes`, in each workspace's mutants/mutmut-stats.json) is the same in both, the
same name is the same mutant. Only mutants with no verdict in NEW_WS are filled; run it when
no mutmut is running in NEW_WS (mutmut rewrites a .meta file from memory).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def hashes(workspace: Path) -> dict[str, str]:
    stats = json.loads((workspace / "mutants" / "mutmut-stats.json").read_text())
    return dict(stats["function_hashes"])


def main() -> None:
    old, new = Path(sys.argv[1]), Path(sys.argv[2])
    old_hashes, new_hashes = hashes(old), hashes(new)
    root = new / "mutants" / "src"
    for meta in sorted(root.rglob("*.py.meta")):
        before = old / "mutants" / "src" / meta.relative_to(root)
        if not before.exists():
            continue
        data = json.loads(meta.read_text())
        earlier = json.loads(before.read_text())["exit_code_by_key"]
        carried = 0
        for name, code in data["exit_code_by_key"].items():
            function = name.rsplit("__mutmut_", 1)[0]
            same = function in new_hashes and old_hashes.get(function) == new_hashes[function]
            if code is None and same and earlier.get(name) is not None:
                data["exit_code_by_key"][name] = earlier[name]
                carried += 1
        if carried:
            meta.write_text(json.dumps(data, indent=4))
            print(f"{meta.relative_to(root)}: {carried} verdicts carried")


if __name__ == "__main__":
    main()
