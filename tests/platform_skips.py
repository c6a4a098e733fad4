"""Which skips CI accepts: the tests that cannot run on some machines, each with why.

With HASHMATCH_STRICT_SKIPS=1 (set by scripts/test.sh, the test command CI runs) any other
skip, at run time or when a test file is collected (a missing extra, missing data), fails
the run with its reason: in CI a test that cannot run says why and fails, so a green run
never hides part of the suite. Without the variable (pytest run by hand) skips stay skips.
tests/conftest.py installs the two hooks.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

STRICT_ENV = "HASHMATCH_STRICT_SKIPS"

# A node ID (parameters left off) or a whole test file, and why it may not run there.
PLATFORM_SKIPS: dict[str, str] = {
    "tests/test_client_hashing.py::test_permission_denied_raises_unreadable": (
        "root reads a file whatever its mode (CI runs as root in a container)"
    ),
    "tests/test_client_hashing.py::test_fifo_is_refused_without_blocking": (
        "POSIX FIFOs do not exist on every platform"
    ),
    "tests/test_store_damage.py::test_an_unreadable_folder_is_refused": (
        "root reads a folder whatever its mode; a file in its place is tested instead"
    ),
    "tests/test_crash.py::test_a_full_disk_is_a_clean_error_and_the_store_recovers": (
        "mounting a small tmpfs needs CAP_SYS_ADMIN, which a container may not grant"
    ),
    "tests/test_multihost.py": (
        "network namespaces need root and iproute2, the balancer needs HAProxy "
        "(multihost_net.unavailable() says which is missing)"
    ),
}


def strict() -> bool:
    return os.environ.get(STRICT_ENV) == "1"


def documented(nodeid: str) -> bool:
    bare = nodeid.split("[", 1)[0]
    return bare in PLATFORM_SKIPS or bare.split("::", 1)[0] in PLATFORM_SKIPS


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def refuse(report: pytest.TestReport | pytest.CollectReport) -> None:
    reason = skip_reason(report)
    report.outcome = "failed"
    report.longrepr = (
        f"{report.nodeid}: skipped in CI ({reason}), and it is not a documented platform "
        f"skip (tests/platform_skips.py): make it run here, or document why it cannot"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # An expected failure is reported as skipped too; it ran.
    ran = hasattr(report, "wasxfail")
    if report.skipped and not ran and strict() and not documented(report.nodeid):
        refuse(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    if report.skipped and strict() and not documented(report.nodeid):
        refuse(report)
    return report
