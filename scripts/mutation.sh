#!/usr/bin/env bash
# Mutation testing of the matching, auth/rpc and store code (slow: not part of CI).
#
#   scripts/mutation.sh [all|rust|python|rerun|rerun-rust|rerun-python|report] [GROUP ...]
#
# rust:   cargo-mutants on hashcore's matching modules (pdq, exact, request, verdicts,
#         policy, refs, index), their unit tests plus tests/index_props.rs,
#         tests/match_request.rs, tests/exact_raw_request.rs, tests/segments.rs (lists
#         written to segment files and read back) and tests/mutants.rs.
#         MUTATION_SHARD=k/n runs one shard of the mutants (a sample: round-robin over
#         all of them).
# python: mutmut on server/hashmatch/server/{matching,rpc,store}/, one workspace per group
#         (GROUPs: matching rpc store; default all three), each with its own test files
#         (benchmarks/mutation/workspace.sh names them); a mutant runs only the tests that
#         reach the function it changed.
# rerun:  after writing tests for survivors: the Rust mutants missed last time, against
#         HEAD's tests (into $MUTATION_WORK/rs-rerun), and each Python group's survivors
#         against HEAD's tests/test_mutants_*.py (in a copy, py-GROUP-rerun).
# report: per-module scores and survivors into benchmarks/mutation/results.md.
#
# Both tools work on a snapshot of the committed tree (git HEAD) under $MUTATION_WORK
# (default /tmp/hashmatch-mutation), never in the working tree, and run under `nice -n 19`.
# Needs: cargo install cargo-mutants --locked; .venv with the dev extra (mutmut).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${MUTATION_WORK:-/tmp/hashmatch-mutation}"
what="${1:-all}"
shift || true
groups=("$@")
[ ${#groups[@]} -eq 0 ] && groups=(matching rpc store)
mkdir -p "$work"

run_rust() {
    # The snapshot's target/ is kept between runs, so later runs build incrementally.
    # Files are extracted with the time of extraction (tar -m), not the commit's: cargo
    # rebuilds what is newer than its last build, and a source put back with an older
    # time than a mutant's build would be taken for built already.
    mkdir -p "$work/rs"
    rm -rf "$work/rs/hashcore/src" "$work/rs/hashcore/tests"
    git -C "$repo" archive --format=tar HEAD hashcore | tar -x -m -C "$work/rs"
    git -C "$repo" rev-parse --short HEAD >"$work/rs/COMMIT"
    local files=() shard=() scope=()
    for m in pdq exact request verdicts policy refs index; do files+=(-f "src/$m.rs"); done
    [ -n "${MUTATION_SHARD:-}" ] && shard=(--shard "$MUTATION_SHARD" --sharding round-robin)
    # Build and run only the tests that exercise these modules (not the examples, nor the
    # change-log fuzzing of changes.rs).
    for a in --lib --test index_props --test match_request --test exact_raw_request --test segments --test mutants; do scope+=(--cargo-arg="$a"); done
    # Unoptimised test builds are slow to run and optimised ones slow to link: opt-level 1
    # without debug info is the quickest round trip per mutant. --in-place mutates the
    # snapshot (never the working tree). Exit code 2 = some mutants missed.
    CARGO_PROFILE_DEV_OPT_LEVEL=1 CARGO_PROFILE_DEV_DEBUG=0 nice -n 19 \
        cargo mutants --dir "$work/rs/hashcore" --output "$work/rs" --in-place \
        --timeout 180 --build-timeout 900 "${files[@]}" "${shard[@]}" "${scope[@]}" ||
        [ $? -eq 2 ]
}

run_python() {
    for group in "${groups[@]}"; do
        local ws="$work/py-$group"
        "$repo/benchmarks/mutation/workspace.sh" "$ws" "$group"
        echo "== mutmut: $group ($ws)"
        (cd "$ws" && nice -n 19 "$repo/.venv/bin/mutmut" run --max-children 2 >"$ws/run.log" 2>&1) ||
            { tail -c 2000 "$ws/run.log"; exit 1; }
    done
}

rerun_rust() {
    local missed="$work/rs/mutants.out/missed.txt" patterns=() scope=()
    [ -s "$missed" ] || return 0
    # The sources as mutated last time (an interrupted run may have left one mutated), the
    # tests as they are now.
    git -C "$repo" archive --format=tar "$(cat "$work/rs/COMMIT")" hashcore/src | tar -x -m -C "$work/rs"
    git -C "$repo" archive --format=tar HEAD hashcore/tests | tar -x -m -C "$work/rs"
    while IFS= read -r line; do
        # "src/f.rs:L:C: replace …": match the whole description literally.
        patterns+=(--re "^$(printf '%s' "$line" | sed 's/[][\\.^$*+?(){}|]/\\&/g')\$")
    done <"$missed"
    for a in --lib --test index_props --test match_request --test exact_raw_request --test segments --test mutants; do scope+=(--cargo-arg="$a"); done
    CARGO_PROFILE_DEV_OPT_LEVEL=1 CARGO_PROFILE_DEV_DEBUG=0 nice -n 19 \
        cargo mutants --dir "$work/rs/hashcore" --output "$work/rs-rerun" --in-place \
        --timeout 180 --build-timeout 900 "${patterns[@]}" "${scope[@]}" || [ $? -eq 2 ]
}

rerun_python() {
    # In a copy of each workspace (the first pass stays as it was), the survivors alone,
    # against the tests written for them: HEAD's tests/test_mutants_*.py.
    for group in "${groups[@]}"; do
        local ws="$work/py-$group" rr="$work/py-$group-rerun"
        mapfile -t names < <("$repo/.venv/bin/python" - "$ws" <<'PY'
import json, pathlib, sys
for meta in pathlib.Path(sys.argv[1], "mutants").rglob("*.py.meta"):
    for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
        if code in (0, 5, 33):
            print(name)
PY
        )
        [ ${#names[@]} -eq 0 ] && continue
        rm -rf "$rr"
        cp -a "$ws" "$rr"
        rm -f "$rr"/run.log
        git -C "$repo" archive --format=tar HEAD tests | tar -x -m -C "$rr"
        cp -r "$rr/tests/." "$rr/mutants/tests/"
        # A test file written for code the snapshot does not hold yet (it imports what is
        # not there) is left out, or the whole selection would fail to collect.
        local selection="" t
        for t in $(cd "$rr" && ls tests/test_mutants_*.py); do
            if (cd "$rr/mutants" && PYTHONPATH=src "$repo/.venv/bin/python" -m pytest -q \
                --collect-only -p no:cacheprovider "$t" >/dev/null 2>&1); then
                selection="$selection${selection:+,}\"$t\""
            else
                echo "== $t does not import against the snapshot: left out"
            fi
        done
        sed -i "s|^pytest_add_cli_args_test_selection = .*|pytest_add_cli_args_test_selection = [$selection]|" \
            "$rr/pyproject.toml" "$rr/mutants/pyproject.toml"
        echo "== mutmut: $group, ${#names[@]} survivors against tests/test_mutants_*.py"
        (cd "$rr" && nice -n 19 "$repo/.venv/bin/mutmut" run --max-children 2 "${names[@]}" \
            >"$rr/run.log" 2>&1) || { tail -c 2000 "$rr/run.log"; exit 1; }
    done
}

report() {
    local python=()
    for group in matching rpc store; do
        [ -d "$work/py-$group/mutants" ] && python+=("$work/py-$group")
    done
    local rust=(--rust)
    for out in "$work/rs/mutants.out" "$work"/rs-rerun*/mutants.out; do
        [ -d "$out" ] && rust+=("$out")
    done
    "$repo/.venv/bin/python" "$repo/benchmarks/mutation/report.py" "${rust[@]}" \
        --python "${python[@]}" >"$repo/benchmarks/mutation/results.md"
    echo "== written: benchmarks/mutation/results.md"
}

case "$what" in
all) run_rust; run_python; report ;;
rust) run_rust; report ;;
python) run_python; report ;;
rerun) rerun_rust; rerun_python; report ;;
rerun-rust) rerun_rust; report ;;
rerun-python) rerun_python; report ;;
report) report ;;
*) echo "usage: scripts/mutation.sh [all|rust|python|rerun|rerun-rust|rerun-python|report] [GROUP ...]" >&2; exit 2 ;;
esac
