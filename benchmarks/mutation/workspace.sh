#!/usr/bin/env bash
# Builds the Python mutation workspace: a snapshot of the committed tree (git HEAD) in the
# src/ layout mutmut expects (it imports the mutated code from mutants/src), plus the built
# core (_hashcore.abi3.so, not tracked by git) and a pyproject.toml holding only the mutmut
# and pytest settings of one module group. Never touches the working tree it is run from.
#   workspace.sh DEST GROUP   (GROUP: matching | rpc | store)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
dest="$1"
group="$2"
skip=""
case "$group" in
matching)
    # Thousands of calls: too slow under mutmut's trampolines; tests/test_mutants_probes.py
    # holds the detector to a model instead.
    skip='"--deselect", "tests/test_trust.py::test_a_boundary_walk_is_throttled_before_it_learns_64_bits", '
    only='"src/hashmatch/server/matching/*"'
    tests='"tests/test_matching.py", "tests/test_core_matcher.py", "tests/test_probes.py", "tests/test_planted_bugs.py", "tests/test_trust.py", "tests/test_mutants_matching.py", "tests/test_mutants_probes.py"'
    ;;
rpc)
    only='"src/hashmatch/server/rpc/*"'
    # test_admission (admission, load shedding, rich statuses), test_logs (RPC log lines)
    # and test_hot_path (tenant cache, grouped log lines) are the tests of limits.py,
    # observers.py, status.py and auth.py's cache: without them those mutants survive
    # untested. test_metrics is left out: its servers run in worker processes.
    tests='"tests/test_auth_matrix.py", "tests/test_access.py", "tests/test_limits.py", "tests/test_admission.py", "tests/test_logs.py", "tests/test_hot_path.py", "tests/test_validation.py", "tests/test_mutated_requests.py", "tests/test_planted_bugs.py", "tests/test_serving.py", "tests/test_tls.py", "tests/test_mutants_auth.py", "tests/test_mutants_tls.py", "tests/test_mutants_rpc.py", "tests/test_mutants_pipeline.py"'
    ;;
store)
    # MUTATION_STORE_ALL=1 mutates every store module; by default the ones that decide who
    # may do what (tenants, tokens, grants, trust, probe records, keys, records).
    only='"src/hashmatch/server/store/tenants.py", "src/hashmatch/server/store/grants.py", "src/hashmatch/server/store/trust.py", "src/hashmatch/server/store/probes.py", "src/hashmatch/server/store/keys.py", "src/hashmatch/server/store/records.py"'
    [ "${MUTATION_STORE_ALL:-}" = 1 ] && only='"src/hashmatch/server/store/*"'
    tests='"tests/test_store_damage.py", "tests/test_store_keys.py", "tests/test_grants.py", "tests/test_trust.py", "tests/test_audit.py", "tests/test_durability.py", "tests/test_planted_bugs.py", "tests/test_sync.py", "tests/test_replica_divergence.py", "tests/test_mutants_probes.py", "tests/test_mutants_store.py", "tests/test_mutants_records.py"'
    ;;
*)
    echo "workspace.sh: unknown group '$group' (matching, rpc, store)" >&2
    exit 2
    ;;
esac
rm -rf "$dest"
mkdir -p "$dest/src/hashmatch"
git -C "$repo" archive --format=tar HEAD server/hashmatch clients/hashmatch tests scripts proto |
    tar -x -C "$dest"
mv "$dest/server/hashmatch/server" "$dest/src/hashmatch/server"
mv "$dest/clients/hashmatch/client" "$dest/clients/hashmatch/v1" "$dest/src/hashmatch/"
rm -rf "$dest/server" "$dest/clients"
cp "$repo/server/hashmatch/server/_hashcore.abi3.so" "$dest/src/hashmatch/server/"
# Test files the group names but HEAD does not hold yet are dropped from the selection.
selection=""
for t in $(echo "$tests" | tr -d '",'); do
    [ -f "$dest/$t" ] && selection="$selection\"$t\", "
done
cat >"$dest/pyproject.toml" <<TOML
[tool.pytest.ini_options]
testpaths = ["tests"]

[tool.mutmut]
source_paths = ["src"]
only_mutate = [$only]
# Tests read these from the tree (scripts/test-ca.sh, the protos).
also_copy = ["scripts", "proto"]
pytest_add_cli_args_test_selection = [${selection%, }]
pytest_add_cli_args = [$skip"-q", "-p", "no:cacheprovider"]
# grpc is not fork-safe once its threads run: workers fork from a clean fork server.
process_isolation = "forkserver"
# A mutant that makes a test wait forever (a stream never ended, a client with no
# deadline) is ended after 5x the tests' expected time, not mutmut's 15x: one such mutant
# would otherwise hold a worker for six minutes.
timeout_multiplier = 5.0
use_git_change_detection = false
TOML
