"""Issue 17's table of planted bugs, rerun: each bug is put into a scratch copy of the tree,
the tests run, and the copy is put back. Never run it on a working tree you edit.

    git worktree add --detach /tmp/mut-wt HEAD
    .venv/bin/python benchmarks/mutation/planted.py /tmp/mut-wt [--rust] \
        > benchmarks/mutation/planted.md

A bug in hashcore is built into the copy's own extension (cargo build --features python,
copied over server/hashmatch/server/_hashcore.abi3.so of the copy); the tests import the
copy's server/ and clients/ ahead of the installed ones (PYTHONPATH). A bug counts as caught
when the Python tests fail on it; with --rust the Rust tests run too for the bugs in hashcore.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# The tests a reviewer would run for these parts (all of them, for every bug).
TESTS = [
    "tests/test_planted_bugs.py",
    "tests/test_auth_matrix.py",
    "tests/test_limits.py",
    "tests/test_validation.py",
    "tests/test_logs.py",
    "tests/test_trust.py",
]
RUST_TESTS = ["--lib", "--test", "index_props", "--test", "match_request"]


@dataclass(frozen=True)
class Bug:
    what: str
    path: str
    old: str
    new: str

    @property
    def rust(self) -> bool:
        return self.path.startswith("hashcore/")


BUGS = [
    Bug(
        "MatchBatch with a missing or unknown token served as a platform",
        "server/hashmatch/server/rpc/pipeline.py",
        """            token = bearer_token(context.invocation_metadata() or ())
            if blocked:""",
        """            try:
                token = bearer_token(context.invocation_metadata() or ())
            except Unauthenticated:
                if not self.name.endswith("/MatchBatch"):
                    raise
                token = ""
            if self.name.endswith("/MatchBatch") and self.p.authenticate(token) is None:
                from hashmatch.server.store import Role, Tenant

                call.tenant = "anonymous"
                return Tenant("anonymous", Role.PLATFORM, 0.0)
            if blocked:""",
    ),
    Bug(
        "a process forgets quarantined references when it starts",
        "server/hashmatch/server/sync/follower.py",
        "        quarantined = frozenset(self.store.quarantined(meta.id))\n        config =",
        "        quarantined: frozenset[str] = frozenset()\n        config =",
    ),
    Bug(
        "`ReleaseQuarantine` without the owner check",
        "server/hashmatch/server/services/lists.py",
        """        self._writable(tenant)
        owned(self.store, request.list, tenant)
        violations: list[Violation] = []
        if not request.reference_ids:""",
        """        self._writable(tenant)
        violations: list[Violation] = []
        if not request.reference_ids:""",
    ),
    Bug(
        "degenerate PDQ queries no longer dropped",
        "hashcore/src/request.rs",
        "if pdq_paused || is_degenerate_pdq(h.value) {",
        "if pdq_paused {",
    ),
    Bug(
        "the 16-hashes-per-item limit removed",
        "hashcore/src/request.rs",
        "} else if hashes.len() > MAX_HASHES_PER_ITEM {",
        "} else if hashes.len() > usize::MAX - 1 {",
    ),
    Bug(
        "the `item_id` checks removed",
        "hashcore/src/request.rs",
        """        if id.len() > MAX_ITEM_ID_BYTES {""",
        """        if false {""",
    ),
    Bug(
        "the `item_id` control-character check removed",
        "hashcore/src/request.rs",
        "} else if id.iter().any(|&b| b < 0x20 || b == 0x7f) {",
        "} else if false {",
    ),
    Bug(
        "the `item_id` of a refused MatchStream item logged",
        "server/hashmatch/server/services/match.py",
        """        async for raw in requests:
            meter(1)""",
        """        async for raw in requests:
            import logging

            logging.getLogger(__name__).info("stream item %r", raw)
            meter(1)""",
    ),
    Bug(
        "the multi-index PDQ verification `<= t` → `< t`",
        "hashcore/src/pdq.rs",
        "if hamming(&hashes[p as usize], q) <= t {",
        "if hamming(&hashes[p as usize], q) < t {",
    ),
    Bug(
        "the multi-index primary-bucket scan `<= t` → `< t`",
        "hashcore/src/pdq.rs",
        "                if hamming(h, q) <= t {",
        "                if hamming(h, q) < t {",
    ),
    Bug(
        "the quality check `<` → `<=`",
        "hashcore/src/index.rs",
        "if quality != QUALITY_UNKNOWN && quality < self.pdq_min_quality {",
        "if quality != QUALITY_UNKNOWN && quality <= self.pdq_min_quality {",
    ),
]


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str]:
    """The exit code and the first failing test (pytest's short summary), if any."""
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return done.returncode, failed[0].split(" - ")[0] if failed else ""


def build(tree: Path, env: dict[str, str]) -> None:
    # Quick to rebuild: no LTO, incremental, many codegen units (speed is not measured).
    benv = env | {
        "CARGO_PROFILE_RELEASE_LTO": "off",
        "CARGO_PROFILE_RELEASE_INCREMENTAL": "true",
        "CARGO_PROFILE_RELEASE_CODEGEN_UNITS": "16",
        "PYO3_PYTHON": sys.executable,
    }
    argv = ["nice", "-n", "19", "cargo", "build", "--release", "--features", "python"]
    subprocess.run(argv, cwd=tree / "hashcore", env=benv, check=True, capture_output=True)
    shutil.copyfile(
        tree / "hashcore/target/release/libhashcore.so",
        tree / "server/hashmatch/server/_hashcore.abi3.so",
    )


def pytest(tree: Path, env: dict[str, str]) -> tuple[int, str]:
    argv = ["nice", "-n", "19", sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p"]
    argv += ["no:cacheprovider", *TESTS]
    return run(argv, tree, env, timeout=1800)


def cargo_test(tree: Path, env: dict[str, str]) -> int:
    argv = ["nice", "-n", "19", "cargo", "test", "--release", "--quiet", *RUST_TESTS]
    renv = env | {"CARGO_PROFILE_RELEASE_LTO": "off", "CARGO_PROFILE_RELEASE_INCREMENTAL": "true"}
    return run(argv, tree / "hashcore", renv, timeout=1800)[0]


def main() -> None:
    tree = Path(sys.argv[1]).resolve()
    with_rust = "--rust" in sys.argv[2:]
    # --only TEXT: just the bugs whose description holds TEXT.
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else ""
    bugs = [b for b in BUGS if only in b.what]
    repo = Path(__file__).resolve().parents[2]
    if tree == repo:
        sys.exit("planted.py: give a scratch copy of the tree, not this one")
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{tree / 'server'}:{tree / 'clients'}"
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True
    ).stdout.strip()
    build(tree, env)
    baseline, _ = pytest(tree, env)
    print(f"Baseline at {head}: pytest exit {baseline} (0 = every test passes).", flush=True)
    print("", flush=True)
    print("| bug put in | file | Python tests | Rust tests |", flush=True)
    print("|---|---|---|---|", flush=True)
    caught = 0
    for bug in bugs:
        path = tree / bug.path
        original = path.read_text()
        assert original.count(bug.old) == 1, bug.what
        path.write_text(original.replace(bug.old, bug.new))
        try:
            rust = "—"
            if bug.rust:
                build(tree, env)
                if with_rust:
                    rust = "caught" if cargo_test(tree, env) != 0 else "not caught"
                else:
                    rust = "not run"
            py, by = pytest(tree, env)
        finally:
            path.write_text(original)
            if bug.rust:
                # The next bug must meet the core as it was, not with this bug built in.
                build(tree, env)
        verdict = f"caught by `{by}`" if py != 0 else "**not caught**"
        caught += py != 0
        print(f"| {bug.what} | {bug.path} | {verdict} (exit {py}) | {rust} |", flush=True)
    print("", flush=True)
    print(f"{caught} of {len(bugs)} caught by the Python tests.", flush=True)


if __name__ == "__main__":
    main()
