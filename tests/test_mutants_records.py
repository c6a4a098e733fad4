"""store/records.py's typed records one at a time: their defaults, their packed and JSON
forms (the bytes the store keeps, so a change would not read back what an earlier version
wrote), lists stored before VPDQ, and tokens (written for the mutants the store tests let
live; benchmarks/mutation)."""

from __future__ import annotations

import hashlib
import json
import re
import struct

import pytest

from hashmatch.server.store import records
from hashmatch.server.store.records import (
    DEFAULT_FLOOD,
    FloodPolicy,
    FloodStat,
    ListMeta,
    Role,
    Tenant,
    TenantShare,
    new_token,
    tenant_from_json,
    token_hash,
)


def test_flood_policy_defaults() -> None:
    assert FloodPolicy() == (20, 100, 60)
    assert FloodPolicy() == DEFAULT_FLOOD
    assert (DEFAULT_FLOOD.factor, DEFAULT_FLOOD.min_matches, DEFAULT_FLOOD.window_seconds) == (
        20,
        100,
        60,
    )
    assert records.ALGORITHMS == 5


def test_flood_stat_defaults_and_packed_form() -> None:
    assert FloodStat() == FloodStat(0, 0.0, 0.0, 0, 0.0)
    stat = FloodStat(total=7, last=1.5, window_start=2.25, window_count=3, baseline=0.125)
    raw = stat.pack()
    # Big-endian: u64 total, f64 last, f64 window start, u64 count, f64 baseline.
    assert raw == struct.pack(">QddQd", 7, 1.5, 2.25, 3, 0.125)
    assert len(raw) == 40
    assert raw[:8] == (7).to_bytes(8, "big")
    assert FloodStat.unpack(raw) == stat
    assert FloodStat.unpack(FloodStat().pack()) == FloodStat()


def test_tenant_share_defaults_and_packed_form() -> None:
    assert TenantShare() == TenantShare(0, 0.0, 0.0, 0)
    share = TenantShare(matches=9, last=4.5, window_start=3.5, window_count=2)
    raw = share.pack()
    assert raw == struct.pack(">QddQ", 9, 4.5, 3.5, 2)
    assert len(raw) == 32
    assert raw[:8] == (9).to_bytes(8, "big")
    assert raw[-8:] == (2).to_bytes(8, "big")
    assert TenantShare.unpack(raw) == share


def test_roles_are_their_stored_names() -> None:
    assert [r.value for r in Role] == ["platform", "hotline", "replica"]


def meta(**kw: object) -> ListMeta:
    fields: dict[str, object] = {
        "id": 3,
        "name": "iwf",
        "owner": "h",
        "version": 12,
        "counts": (1, 2, 3, 4, 5),
        "pdq_threshold": 31,
        "pdq_min_quality": 50,
        "digest": bytes(range(32)),
        "next_entry_id": 99,
        "created_at": 1.5,
        "updated_at": 2.5,
    }
    fields.update(kw)
    return ListMeta(**fields)  # type: ignore[arg-type]


def test_list_meta_defaults() -> None:
    plain = meta()
    assert plain.last_batch_id == ""
    assert plain.flood == DEFAULT_FLOOD
    assert plain.exposed_label_keys == ()
    assert (plain.video_query_percent, plain.video_listed_percent) == (80, 0)


def test_list_meta_round_trips_through_its_json() -> None:
    full = meta(
        last_batch_id="b7",
        flood=FloodPolicy(5, 10, 30),
        exposed_label_keys=("category", "source"),
        video_query_percent=60,
        video_listed_percent=40,
    )
    raw = full.to_json()
    data = json.loads(raw)
    assert data["digest"] == bytes(range(32)).hex()
    assert data["flood"] == [5, 10, 30]
    assert data["counts"] == [1, 2, 3, 4, 5]
    assert data["exposed_label_keys"] == ["category", "source"]
    again = ListMeta.from_json(raw)
    assert again == full
    assert type(again.flood) is FloodPolicy and type(again.counts) is tuple
    assert type(again.exposed_label_keys) is tuple


def test_a_list_stored_before_vpdq_flood_and_labels_reads_with_defaults() -> None:
    old = {
        "id": 1,
        "name": "old",
        "owner": "h",
        "version": 4,
        "counts": [1, 2, 3, 4],
        "pdq_threshold": 31,
        "pdq_min_quality": 50,
        "digest": "ab" * 32,
        "next_entry_id": 5,
        "created_at": 1.0,
        "updated_at": 2.0,
    }
    read = ListMeta.from_json(json.dumps(old).encode())
    assert read.counts == (1, 2, 3, 4, 0)
    assert read.digest == b"\xab" * 32
    assert read.flood == DEFAULT_FLOOD and type(read.flood) is FloodPolicy
    assert read.exposed_label_keys == ()
    assert read.last_batch_id == ""


def test_tokens_are_random_and_kept_as_their_sha256() -> None:
    token = new_token()
    assert re.fullmatch(r"hm_[A-Za-z0-9_-]{43}", token)
    assert new_token() != token
    assert token_hash(token) == hashlib.sha256(token.encode()).digest()
    # Not ASCII: encoded as UTF-8 (a token is only ever ASCII, but the hash must not fail).
    assert token_hash("hm_é") == hashlib.sha256("hm_é".encode()).digest()


@pytest.mark.parametrize("role", list(Role))
def test_a_tenant_reads_from_its_json(role: Role) -> None:
    raw = json.dumps({"role": role.value, "created_at": 12.5}).encode()
    assert tenant_from_json("acme", raw) == Tenant(name="acme", role=role, created_at=12.5)
