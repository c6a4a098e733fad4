"""Tenants and tokens (store/tenants.py) and quarantine events (store/trust.py) called on
the store directly: the admin commands reach them only through a subprocess, which
mutation testing cannot see into, and replicas mirror them (benchmarks/mutation)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from hashmatch.server.matching.flood import judge
from hashmatch.server.store import Role, Store, grants, replica_state
from hashmatch.server.store.changelog import QUARANTINE, RELEASE
from hashmatch.server.store.errors import (
    ListNotFound,
    StaleVersion,
    TenantExists,
    TenantNotFound,
)
from hashmatch.server.store.records import FloodPolicy, PlatformSettings, token_hash


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "a")


def roles_and_counts(store: Store) -> list[tuple[str, Role, int]]:
    return [(t.name, t.role, n) for t, n in store.tenants()]


def test_add_tenant_refuses_a_name_in_use_and_audits(store: Store) -> None:
    token = store.add_tenant("p", Role.PLATFORM)
    assert token.startswith("hm_")
    with pytest.raises(TenantExists, match=r"^p$"):
        store.add_tenant("p", Role.HOTLINE)
    tenant = store.authenticate(token)
    assert tenant is not None and (tenant.name, tenant.role) == ("p", Role.PLATFORM)
    assert tenant.created_at > 0
    (record,) = store.audit_log(actions=["add-tenant"])
    assert (record["tenant"], record["role"], record["actor"]) == ("p", "platform", "admin")


def test_issue_and_revoke_tokens(store: Store) -> None:
    first = store.add_tenant("p", Role.PLATFORM)
    other = store.add_tenant("h", Role.HOTLINE)
    with pytest.raises(TenantNotFound, match=r"^nobody$"):
        store.issue_token("nobody")
    with pytest.raises(TenantNotFound, match=r"^nobody$"):
        store.revoke_tokens("nobody")
    second = store.issue_token("p")
    assert second != first
    assert roles_and_counts(store) == [("h", Role.HOTLINE, 1), ("p", Role.PLATFORM, 2)]
    for token in (first, second):
        found = store.authenticate(token)
        assert found is not None and found.name == "p"
    assert store.revoke_tokens("p") == 2
    assert store.authenticate(first) is None and store.authenticate(second) is None
    # Another tenant's token is untouched.
    found = store.authenticate(other)
    assert found is not None and found.name == "h"
    assert roles_and_counts(store) == [("h", Role.HOTLINE, 1), ("p", Role.PLATFORM, 0)]
    assert store.revoke_tokens("p") == 0
    actions = [
        (r["action"], r.get("tenant"), r.get("count"))
        for r in store.audit_log()
        if r["actor"] == "admin"
    ]
    assert ("issue-token", "p", None) in actions
    assert ("revoke-tokens", "p", 2) in actions
    assert ("revoke-tokens", "p", 0) in actions


def test_a_token_whose_tenant_is_gone_authenticates_no_one(store: Store) -> None:
    # Tenants are removed with their tokens; a token row left without its tenant (a
    # damaged or hand-edited store) must still be refused, not fail.
    with store._write() as txn:
        txn.put(token_hash("orphan"), b"nobody", db=store._db("tokens"))
    assert store.authenticate("orphan") is None


def test_tenant_tokens_are_the_hashes_of_live_tokens(store: Store) -> None:
    a = store.add_tenant("a", Role.PLATFORM)
    b = store.add_tenant("b", Role.REPLICA)
    b2 = store.issue_token("b")
    store.add_tenant("c", Role.HOTLINE)
    store.revoke_tokens("c")
    got = {t.name: (t.role, sorted(h)) for t, h in store.tenant_tokens()}
    assert got == {
        "a": (Role.PLATFORM, [token_hash(a)]),
        "b": (Role.REPLICA, sorted([token_hash(b), token_hash(b2)])),
        "c": (Role.HOTLINE, []),
    }


def test_mirror_tenants_copies_and_removes(store: Store, tmp_path: Path) -> None:
    a = store.add_tenant("a", Role.PLATFORM)
    b = store.add_tenant("b", Role.HOTLINE)
    store.set_subscriptions("a", False, ["iwf", "ncmec"])
    store.update_allow_list("a", [(1, b"\x01" * 16)], [])
    replica = Store(tmp_path / "r")
    gone = replica.add_tenant("gone", Role.PLATFORM)
    seq = replica.seq()
    allow_seq = replica.allow_seq()

    assert replica.mirror_tenants(store.tenant_tokens(), store.platform_settings()) is True
    assert replica.seq() > seq
    assert replica.allow_seq() > allow_seq
    assert roles_and_counts(replica) == roles_and_counts(store)
    assert {t.name: t.created_at for t, _ in replica.tenants()} == {
        t.name: t.created_at for t, _ in store.tenants()
    }
    for token, name in ((a, "a"), (b, "b")):
        found = replica.authenticate(token)
        assert found is not None and found.name == name
    assert replica.authenticate(gone) is None
    assert replica.platform_settings() == store.platform_settings()
    assert replica.allow_list("a") == [(1, b"\x01" * 16)]

    # Nothing new: nothing written.
    seq = replica.seq()
    assert replica.mirror_tenants(store.tenant_tokens(), store.platform_settings()) is False
    assert replica.seq() == seq

    # A revocation and an emptied allow-list travel too; the allow counter moves.
    store.revoke_tokens("b")
    store.update_allow_list("a", [], [(1, b"\x01" * 16)])
    allow_seq = replica.allow_seq()
    assert replica.mirror_tenants(store.tenant_tokens(), store.platform_settings()) is True
    assert replica.authenticate(b) is None
    assert replica.allow_list("a") == []
    assert replica.allow_seq() > allow_seq


def test_mirror_without_allow_changes_keeps_the_allow_counter(store: Store, tmp_path: Path) -> None:
    store.add_tenant("a", Role.PLATFORM)
    replica = Store(tmp_path / "r")
    replica.mirror_tenants(store.tenant_tokens(), store.platform_settings())
    allow_seq = replica.allow_seq()
    store.issue_token("a")
    assert replica.mirror_tenants(store.tenant_tokens(), store.platform_settings()) is True
    assert replica.allow_seq() == allow_seq


def test_platform_settings_round_trip(store: Store) -> None:
    store.add_tenant("a", Role.PLATFORM)
    store.set_subscriptions("a", True, ["z", "b", "b"])
    settings = store.platform_settings()["a"]
    assert settings == PlatformSettings(True, ["b", "z"], [])


def test_a_flood_is_quarantined_as_a_list_version_and_audited(store: Store) -> None:
    store.add_tenant("p", Role.PLATFORM)
    meta = store.create_list(
        "iwf", "h", pdq_threshold=31, pdq_min_quality=50, flood=FloodPolicy(3, 10, 60)
    )
    now = time.time() + 5.0
    tripped = store.add_match_counts({("p", meta.id, "R-1"): (20, now)}, judge, now=now)
    assert tripped == [("iwf", "R-1")]
    assert store.quarantined(meta.id) == {
        "R-1": {"since": now, "window_matches": 20, "baseline": 0.0}
    }
    after = store.get_list("iwf")
    assert after is not None and (after.version, after.updated_at) == (meta.version + 1, now)
    (record,) = store.audit_log(actions=["quarantine"])
    assert (record["actor"], record["list"], record["references"], record["version"]) == (
        "flood-detection",
        "iwf",
        ["R-1"],
        meta.version + 1,
    )


def test_a_replica_counts_a_flood_but_never_quarantines_it(store: Store) -> None:
    store.add_tenant("p", Role.PLATFORM)
    meta = store.create_list(
        "iwf", "h", pdq_threshold=31, pdq_min_quality=50, flood=FloodPolicy(3, 10, 60)
    )
    replica_state.follow(store, "primary.example:50051")
    now = time.time() + 5.0
    assert store.add_match_counts({("p", meta.id, "R-1"): (20, now)}, judge, now=now) == []
    assert store.quarantined(meta.id) == {}
    after = store.get_list("iwf")
    assert after is not None and after.version == meta.version
    assert [(ref, n) for ref, n, _ in store.match_counts(meta.id)] == [("R-1", 20)]


def test_apply_event_changes_only_what_it_must(store: Store) -> None:
    meta = store.create_list("iwf", "h", pdq_threshold=31, pdq_min_quality=50)
    v = meta.version
    with pytest.raises(ListNotFound, match=r"^nope$"):
        store.apply_event("nope", QUARANTINE, ["A"], actor="h")
    before = time.time()
    assert store.apply_event("iwf", QUARANTINE, ["A", "A", "B"], actor="h") == (v + 1, 2)
    listed = store.get_list("iwf")
    assert listed is not None and listed.updated_at >= before
    held = store.quarantined(meta.id)
    assert set(held) == {"A", "B"}
    assert held["A"]["window_matches"] == 0 and held["A"]["baseline"] == 0.0
    assert before <= held["A"]["since"] <= time.time()
    # Nothing to change: no new version.
    assert store.apply_event("iwf", QUARANTINE, ["A"], actor="h") == (v + 1, 0)
    assert store.apply_event("iwf", RELEASE, ["C"], actor="h") == (v + 1, 0)
    assert set(store.quarantined(meta.id)) == {"A", "B"}
    # A replica names the version it expects: a stale one is refused with the current.
    with pytest.raises(StaleVersion) as err:
        store.apply_event("iwf", RELEASE, ["A"], actor="r", expected_version=v)
    assert err.value.current == v + 1
    assert store.apply_event("iwf", RELEASE, ["A"], actor="r", expected_version=v + 1) == (v + 2, 1)
    assert set(store.quarantined(meta.id)) == {"B"}
    # ...and keeps its primary's version even when nothing changes here.
    assert store.apply_event("iwf", RELEASE, ["A"], actor="r", expected_version=v + 2) == (v + 3, 0)
    release = [r for r in store.audit_log(actions=["release"]) if r["references"]]
    assert [(r["actor"], r["references"], r["version"]) for r in release] == [("r", ["A"], v + 2)]
    (by_hand,) = [r for r in store.audit_log(actions=["quarantine"]) if r["actor"] == "h"]
    assert (by_hand["list"], sorted(by_hand["references"]), by_hand["version"]) == (
        "iwf",
        ["A", "B"],
        v + 1,
    )
    assert {r["list"] for r in release} == {"iwf"}


def test_a_flood_is_quarantined_once_and_floods_of_two_lists_in_one_flush(store: Store) -> None:
    store.add_tenant("p", Role.PLATFORM)
    policy = FloodPolicy(3, 10, 60)
    a = store.create_list("a", "h", pdq_threshold=31, pdq_min_quality=50, flood=policy)
    b = store.create_list("b", "h", pdq_threshold=31, pdq_min_quality=50, flood=policy)
    now = time.time() + 5.0
    counts = {("p", a.id, "R-1"): (20, now), ("p", b.id, "R-2"): (20, now)}
    assert sorted(store.add_match_counts(counts, judge, now=now)) == [("a", "R-1"), ("b", "R-2")]
    versions = [m.version for m in store.lists()]
    # Flooding on while quarantined: counted, not quarantined (nor versioned) again.
    later = now + 1.0
    counts = {("p", a.id, "R-1"): (40, later), ("p", b.id, "R-2"): (40, later)}
    assert store.add_match_counts(counts, judge, now=later) == []
    assert [m.version for m in store.lists()] == versions
    assert len(store.audit_log(actions=["quarantine"])) == 2


def test_grants_are_listed_in_order_and_mirrored_once(store: Store, tmp_path: Path) -> None:
    store.add_tenant("b", Role.PLATFORM)
    store.add_tenant("a", Role.PLATFORM)
    second = store.create_list("z-list", "h", pdq_threshold=31, pdq_min_quality=50)
    first = store.create_list("a-list", "h", pdq_threshold=31, pdq_min_quality=50)
    for meta, tenant in ((second, "a"), (first, "b"), (first, "a")):
        assert grants.grant(store, meta, tenant, actor="h")
    assert [(g.list, g.tenant) for g in grants.all_grants(store)] == [
        ("a-list", "a"),
        ("a-list", "b"),
        ("z-list", "a"),
    ]
    replica = Store(tmp_path / "r")
    for name in ("a-list", "z-list"):
        replica.create_list(name, "h", pdq_threshold=31, pdq_min_quality=50)
    assert grants.mirror_grants(replica, grants.all_grants(store)) is True
    assert grants.all_grants(replica) == grants.all_grants(store)
    seq = replica.seq()
    assert grants.mirror_grants(replica, grants.all_grants(store)) is False
    assert replica.seq() == seq


def test_a_grant_of_a_list_the_store_does_not_hold_is_skipped(store: Store) -> None:
    # Lists are never deleted, so only a damaged or hand-edited store holds such a grant;
    # the walk must step over it, not end there (its key sorts before every real list's).
    store.add_tenant("p", Role.PLATFORM)
    meta = store.create_list("iwf", "h", pdq_threshold=31, pdq_min_quality=50)
    assert grants.grant(store, meta, "p", actor="h")
    with store._write() as txn:
        txn.put(grants._key(0, "p"), b'{"at": 1.0, "by": "h"}', db=store._db(grants.DB))
    assert [(g.list, g.tenant) for g in grants.all_grants(store)] == [("iwf", "p")]


def test_grants_name_what_is_missing_and_are_audited(store: Store) -> None:
    store.add_tenant("p", Role.PLATFORM)
    meta = store.create_list("iwf", "h", pdq_threshold=31, pdq_min_quality=50)
    with pytest.raises(TenantNotFound, match=r"^nobody$"):
        grants.grant(store, meta, "nobody", actor="h")
    with pytest.raises(ListNotFound, match=r"^gone$"):
        grants.grant(store, replace(meta, name="gone"), "p", actor="h")
    before = time.time()
    assert grants.grant(store, meta, "p", actor="h") is True
    assert grants.grant(store, meta, "p", actor="h") is False
    (held,) = grants.grants_of(store, meta.id)
    assert (held.list_id, held.tenant, held.granted_by) == (meta.id, "p", "h")
    assert before <= held.granted_at <= time.time()
    assert grants.granted_lists(store, "p") == {meta.id}
    assert grants.all_grants(store) == [grants.NamedGrant("iwf", "p", held.granted_at, "h")]
    assert grants.revoke(store, meta, "p", actor="h") is True
    assert grants.revoke(store, meta, "p", actor="h") is False
    assert grants.granted_lists(store, "p") == set()
    records = [
        (r["actor"], r["action"], r["list"], r["tenant"])
        for r in store.audit_log(actions=["grant-access", "revoke-access"])
    ]
    assert records == [("h", "grant-access", "iwf", "p"), ("h", "revoke-access", "iwf", "p")]
