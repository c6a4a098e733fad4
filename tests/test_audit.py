"""A list's audit log for its owner (ListService.GetAuditLog, `hashmatch-client audit`) and
the operator's filtered `hashmatch admin audit`."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import Running
from hashmatch.client import MD5, HashmatchError, InvalidArgument, NotFound, PermissionDenied
from hashmatch.client.cli import main as client_main
from hashmatch.server.cli import main as server_main
from hashmatch.server.store import Role, Store
from helpers import random_digest, upsert

LIST = "iwf-feed"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _seed(running: Running) -> list[bytes]:
    rng = random.Random(11)
    digests = [random_digest(rng, MD5) for _ in range(3)]
    owner = running.lists("hotline-a")
    owner.create_list(LIST)
    owner.apply_changes(LIST, "b1", [upsert(MD5, digests[0], "R-1")])
    owner.apply_changes(LIST, "b2", [upsert(MD5, digests[1], "R-2")])
    other = running.lists("hotline-b")
    other.create_list("other-list")
    other.apply_changes("other-list", "x1", [upsert(MD5, digests[2], "X-1")])
    # A refused CreateList of the owner's name by another tenant: audited, but not the
    # list's (it would tell the owner who probed for its names).
    with pytest.raises(HashmatchError):
        other.create_list(LIST)
    return digests


def test_the_owner_reads_its_lists_audit_log(running: Running) -> None:
    digests = _seed(running)
    records = running.lists("hotline-a").audit_log(LIST)
    assert [(r.actor, r.action) for r in records] == [
        ("hotline-a", "create-list"),
        ("hotline-a", "apply-changes"),
        ("hotline-a", "apply-changes"),
    ]
    details = [json.loads(r.details) for r in records]
    assert details[0] == {"list": LIST}
    assert [(d["batch_id"], d["version"], d["upserted"]) for d in details[1:]] == [
        ("b1", 1, 1),
        ("b2", 2, 1),
    ]
    times = [r.at.ToDatetime(tzinfo=UTC) for r in records]
    assert times == sorted(times)
    assert all(abs(datetime.now(UTC) - t) < timedelta(minutes=5) for t in times)
    text = str(records)
    assert "other-list" not in text and "hotline-b" not in text
    assert all(d.hex() not in text for d in digests)


def test_filters_by_action_time_and_limit(running: Running) -> None:
    _seed(running)
    client = running.lists("hotline-a")
    applied = client.audit_log(LIST, actions=["apply-changes"])
    assert [json.loads(r.details)["batch_id"] for r in applied] == ["b1", "b2"]
    assert [r.action for r in client.audit_log(LIST, actions=["create-list"])] == ["create-list"]
    assert client.audit_log(LIST, actions=["grant-access"]) == []
    newest = client.audit_log(LIST, limit=1)
    assert [json.loads(r.details).get("batch_id") for r in newest] == ["b2"]
    all_records = client.audit_log(LIST)
    second = all_records[1].at.ToDatetime(tzinfo=UTC)
    assert [r.action for r in client.audit_log(LIST, since=second)] == ["apply-changes"] * 2
    # (A datetime holds microseconds: the record's own time, in nanoseconds, is later.)
    until = second + timedelta(microseconds=1)
    assert [r.action for r in client.audit_log(LIST, until=until)] == [
        "create-list",
        "apply-changes",
    ]
    future = datetime.now(UTC) + timedelta(hours=1)
    assert client.audit_log(LIST, since=future) == []
    with pytest.raises(InvalidArgument):
        client.audit_log(LIST, limit=10_001)
    with pytest.raises(InvalidArgument):
        client.audit_log(LIST, since=future, until=second)


def test_another_hotline_hears_not_found_and_a_platform_permission_denied(
    running: Running,
) -> None:
    _seed(running)
    with pytest.raises(NotFound) as other:
        running.lists("hotline-b").audit_log(LIST)
    with pytest.raises(NotFound) as missing:
        running.lists("hotline-b").audit_log("no-such-list")
    assert str(other.value).replace(LIST, "X") == str(missing.value).replace("no-such-list", "X")
    with pytest.raises(PermissionDenied):
        running.lists("platform").audit_log(LIST)
    # A grantee reads the list, but its audit log stays the owner's.
    running.lists("hotline-a").grant_access(LIST, "hotline-b")
    with pytest.raises(PermissionDenied):
        running.lists("hotline-b").audit_log(LIST)


def test_client_cli_prints_iso_lines(running: Running, capsys: pytest.CaptureFixture[str]) -> None:
    _seed(running)
    argv = ["--server", running.address, "--token", running.tokens["hotline-a"], "audit"]
    capsys.readouterr()
    assert client_main([*argv, LIST]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    fields = lines[1].split("\t")
    assert ISO_Z.match(fields[0]), fields[0]
    assert fields[1:3] == ["hotline-a", "apply-changes"]
    assert json.loads(fields[3])["batch_id"] == "b1"

    assert client_main([*argv, LIST, "--action", "apply-changes", "--limit", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["list"] == LIST
    [record] = doc["records"]
    assert record["action"] == "apply-changes" and record["details"]["batch_id"] == "b2"
    assert ISO_Z.match(record["at"])

    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert client_main([*argv, LIST, "--since", future]) == 0
    assert capsys.readouterr().out == f"no audit records for {LIST}\n"
    assert client_main([*argv, LIST, "--since", "yesterday"]) == 2


def test_admin_audit_filters_and_iso_times(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = str(tmp_path / "data")
    assert server_main(["admin", "init", "--data-dir", data_dir]) == 0
    store = Store(Path(data_dir))
    try:
        store.add_tenant("hotline-a", Role.HOTLINE)
        store.create_list(LIST, "hotline-a", pdq_threshold=31, pdq_min_quality=50)
        store.create_list("other-list", "hotline-a", pdq_threshold=31, pdq_min_quality=50)
        for batch in ("b1", "b2"):
            store.record_audit("hotline-a", "apply-changes", list=LIST, batch_id=batch)
        store.record_audit("hotline-a", "apply-changes", list="other-list", batch_id="x1")
    finally:
        store.close()

    def admin(*args: str) -> list[dict[str, object]]:
        capsys.readouterr()
        assert server_main(["admin", "audit", "--data-dir", data_dir, *args]) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    everything = admin()
    assert [r["action"] for r in everything][:2] == ["add-tenant", "create-list"]
    assert all(ISO_Z.match(str(r["at"])) for r in everything), everything
    ours = admin("--list", LIST)
    assert [r["action"] for r in ours] == ["create-list", "apply-changes", "apply-changes"]
    both = admin("--action", "apply-changes", "--action", "create-list")
    assert [r.get("list") for r in both] == [LIST, "other-list", LIST, LIST, "other-list"]
    since = str(ours[1]["at"])
    # Times are in milliseconds: a record of the same millisecond as `since` (create-list,
    # on a fast machine) is in too.
    expected = [r["action"] for r in ours if str(r["at"]) >= since]
    assert expected[-2:] == ["apply-changes"] * 2
    assert [r["action"] for r in admin("--list", LIST, "--since", since)] == expected
    assert admin("--list", LIST, "--until", "2000-01-01T00:00:00Z") == []
    assert [r["batch_id"] for r in admin("--list", LIST, "--limit", "1")] == ["b2"]
    capsys.readouterr()
    assert server_main(["admin", "audit", "--data-dir", data_dir, "--since", "soon"]) == 2
