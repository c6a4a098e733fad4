"""Hotline sync: bulk uploads, resume, WatchChanges, and the client's push."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import Running
from hashmatch.client import MD5, PDQ, SHA1, SHA256, InvalidArgument, make_hash
from hashmatch.client.digest import ListDigest
from hashmatch.client.errors import ResourceExhausted
from hashmatch.client.list_client import Change, build_batch
from hashmatch.client.push import push, summarize, upload_id_for
from hashmatch.server.services import lists as list_service
from hashmatch.v1 import lists_pb2
from helpers import eventually, hashes, random_digest, random_pdq, retire, upsert


def make_batches(
    rng: random.Random, n: int, size: int, name: str = "iwf"
) -> list[lists_pb2.ApplyChangesRequest]:
    algs = [MD5, SHA1, SHA256, PDQ]
    out = []
    for b in range(n):
        changes = []
        for i in range(size):
            alg = algs[(b * size + i) % 4]
            value = random_pdq(rng) if alg == PDQ else random_digest(rng, alg)
            changes.append(upsert(alg, value, f"R-{b}-{i}"))
        out.append(build_batch(name, f"up-{b}", changes))
    return out


def digest_of(batches: list[lists_pb2.ApplyChangesRequest]) -> str:
    d = ListDigest()
    for batch in batches:
        for e in batch.upserts:
            d.add(e.hash.algorithm, e.hash.value, e.reference_id)
    return d.hex()


def test_upload_applies_each_message_as_a_batch(running: Running) -> None:
    lists = running.lists()
    lists.create_list("iwf")
    batches = make_batches(random.Random(1), 5, 40)
    summary = lists.upload_changes(batches)
    assert (summary.batches_applied, summary.version, summary.upserted) == (5, 5, 200)
    assert summary.last_batch_id == "up-4"
    info = lists.get_list("iwf")
    assert info.digest == digest_of(batches) == summary.digest.hex()
    assert info.last_batch_id == "up-4"
    assert sum(info.counts.values()) == 200
    again = lists.upload_changes(batches)
    assert (again.batches_applied, again.batches_already_applied, again.version) == (0, 5, 5)


def test_a_bad_message_stops_the_upload_and_keeps_earlier_batches(running: Running) -> None:
    lists = running.lists()
    lists.create_list("iwf")
    batches = make_batches(random.Random(2), 4, 10)
    batches[2].upserts[7].hash.value = b"short"
    with pytest.raises(InvalidArgument) as err:
        lists.upload_changes(batches)
    assert [v.field for v in err.value.violations] == ["messages[2].upserts[7].hash.value"]
    assert "the 2 before it are applied" in err.value.message
    info = lists.get_list("iwf")
    assert (info.version, info.last_batch_id) == (2, "up-1")
    assert info.digest == digest_of(batches[:2])


def test_large_messages_are_read_apart_from_the_event_loop_with_the_same_answers(
    running: Running,
) -> None:
    """Messages over POOL_READ_BYTES are read on the thread pool: applied the same, and a
    bad one refused the same, naming its message and field."""
    lists = running.lists()
    lists.create_list("iwf")
    batches = make_batches(random.Random(3), 3, 8_000)
    assert all(b.ByteSize() > list_service.POOL_READ_BYTES for b in batches)
    batches[2].upserts[7_999].hash.value = b"short"
    with pytest.raises(InvalidArgument) as err:
        lists.upload_changes(batches)
    assert [v.field for v in err.value.violations] == ["messages[2].upserts[7999].hash.value"]
    info = lists.get_list("iwf")
    assert (info.version, info.last_batch_id, info.digest) == (2, "up-1", digest_of(batches[:2]))


def test_watch_replays_history_then_follows_live(running: Running) -> None:
    rng = random.Random(3)
    lists = running.lists()
    lists.create_list("iwf")
    first, second = random_digest(rng, MD5), random_digest(rng, MD5)
    lists.apply_changes("iwf", "b1", [upsert(MD5, first, "R-1")])
    lists.apply_changes("iwf", "b2", [upsert(MD5, second, "R-2"), retire(MD5, first)])
    stream = running.lists("replica").watch_changes("iwf", 0, timeout=20)
    got = [next(stream), next(stream)]
    assert [(b.version, b.batch_id) for b in got] == [(1, "b1"), (2, "b2")]
    assert [e.reference_id for e in got[1].upserts] == ["R-2"]
    assert [h.value for h in got[1].retirements] == [first]
    threading.Timer(0.2, lambda: lists.apply_changes("iwf", "b3", [retire(MD5, second)])).start()
    live = next(stream)
    assert (live.version, live.batch_id, len(live.retirements)) == (3, "b3", 1)
    assert live.digest.hex() == lists.get_list("iwf").digest
    stream.close()
    from_two = running.lists("replica").watch_changes("iwf", 2, timeout=20)
    assert next(from_two).version == 3
    from_two.close()


def test_platforms_and_other_hotlines_cannot_watch(running: Running) -> None:
    from hashmatch.client import NotFound

    running.lists("hotline-a").create_list("iwf")
    # Without a grant (test_grants.py) another tenant's list does not exist for them.
    for tenant in ("platform", "hotline-b"):
        with pytest.raises(NotFound):
            next(running.lists(tenant).watch_changes("iwf", 0, timeout=5))


def write_list_file(path: Path, rng: random.Random, rows: int) -> None:
    lines = ["algorithm,hash_hex,reference_id,quality"]
    for i in range(rows):
        if i % 3 == 0:
            lines.append(f"pdq,{random_pdq(rng).hex()},P-{i},90")
        else:
            lines.append(f"sha1,{random_digest(rng, SHA1).hex()},S-{i},")
    path.write_text("\n".join(lines) + "\n")


def test_push_resumes_after_an_interruption(running: Running, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    write_list_file(path, random.Random(4), 1000)
    lists = running.lists()
    lists.create_list("iwf")
    summary = summarize(path, retire=False)
    upload_id = upload_id_for(path)
    # An upload that dies after three of its ten batches were applied...
    from hashmatch.client.push import batches

    partial = [req for _, req in batches(path, "iwf", upload_id, 100, retire=False, skip=0)][:3]
    lists.upload_changes(partial)
    # ...resumes at the fourth: no duplicates, no gaps, and the digests agree.
    result = push(lists, path, "iwf", summary=summary, upload_id=upload_id, batch_size=100)
    assert (result.skipped_batches, result.batches, result.version) == (3, 10, 10)
    assert result.digest_matches
    info = lists.get_list("iwf")
    assert info.counts["pdq"] + info.counts["sha1"] == 1000
    rng = random.Random(4)
    write_list_file(tmp_path / "same.csv", rng, 1)
    pdq_row = (tmp_path / "same.csv").read_text().splitlines()[1].split(",")
    result_match = running.matcher().match([make_hash(PDQ, bytes.fromhex(pdq_row[1]), 90)])
    assert [r.reference_id for r in result_match.references] == ["P-0"]


def test_a_retraction_through_upload_stops_matching(running: Running) -> None:
    rng = random.Random(5)
    value = random_digest(rng, SHA256)
    lists = running.lists()
    lists.create_list("iwf")
    lists.apply_changes("iwf", "b1", [upsert(SHA256, value, "R")])
    assert running.matcher().match(hashes((SHA256, value))).matched
    lists.upload_changes([build_batch("iwf", "r1", [retire(SHA256, value)])])
    assert not running.matcher().match(hashes((SHA256, value))).matched


def test_malformed_utf8_in_an_upload_names_the_message_and_field(running: Running) -> None:
    import grpc

    lists = running.lists()
    lists.create_list("iwf")
    batches = make_batches(random.Random(8), 3, 5)
    raw = [b.SerializeToString() for b in batches]
    raw[1] = raw[1].replace(b"R-1-2", b"R-\xff-2")
    token = running.tokens["hotline-a"]
    with grpc.insecure_channel(running.address) as channel:
        upload = channel.stream_unary("/hashmatch.v1.ListService/UploadChanges")
        with pytest.raises(grpc.RpcError) as err:
            upload(iter(raw), metadata=(("authorization", f"Bearer {token}"),), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "messages[1].upserts[2].reference_id" in err.value.details()
    assert "the 1 before it are applied" in err.value.details()
    assert lists.get_list("iwf").version == 1


def test_batches_committed_together_still_apply_in_order(running: Running) -> None:
    """UploadChanges commits consecutive batches in one transaction: a later batch sees
    what an earlier one in the same group did."""
    rng = random.Random(9)
    a, b, c = (random_digest(rng, SHA1) for _ in range(3))
    lists = running.lists()
    lists.create_list("iwf")
    summary = lists.upload_changes(
        [
            build_batch("iwf", "g1", [upsert(SHA1, a, "A"), upsert(SHA1, b, "B")]),
            build_batch("iwf", "g2", [upsert(SHA1, a, "A2"), upsert(SHA1, c, "C")]),
            build_batch("iwf", "g3", [retire(SHA1, b), upsert(SHA1, c, "C")]),
        ]
    )
    assert (summary.version, summary.upserted, summary.retired) == (3, 4, 1)
    expected = ListDigest()
    expected.add(SHA1, a, "A2")
    expected.add(SHA1, c, "C")
    info = lists.get_list("iwf")
    assert (info.digest, info.counts["sha1"]) == (expected.hex(), 2)
    client = running.matcher()
    assert [r.reference_id for r in client.match(hashes((SHA1, a))).references] == ["A2"]
    assert not client.match(hashes((SHA1, b))).matched
    assert [r.reference_id for r in client.match(hashes((SHA1, c))).references] == ["C"]


def held_upload(
    list_name: str, batch_id: str, release: threading.Event, change: Change | None = None
) -> Iterator[lists_pb2.ApplyChangesRequest]:
    """An upload, batch by batch, that stays open after its first message until `release`;
    that message holds `change`, by default a new entry."""
    if change is None:
        change = upsert(SHA1, random_digest(random.Random(batch_id), SHA1), "H")
    yield build_batch(list_name, batch_id, [change])
    release.wait(30)


def test_a_tenant_has_a_bounded_number_of_uploads_open(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each open upload may hold a group of changes in memory before it commits them: a
    hotline opening uploads by the dozen is held to MAX_TENANT_UPLOADS (2 here) at a time,
    across its lists. The open ones go on; another hotline is not held back; and the
    next upload is taken once one has ended."""
    monkeypatch.setattr(list_service, "MAX_TENANT_UPLOADS", 2)
    # Every message is committed as it comes, so the test sees when each upload is open.
    monkeypatch.setattr(list_service, "UPLOAD_GROUP_ENTRIES", 1)
    lists = running.lists()
    for name in ("iwf", "other"):
        lists.create_list(name)
    running.lists("hotline-b").create_list("ncmec")
    release = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        held = [
            pool.submit(lists.upload_changes, held_upload(name, f"held-{name}", release))
            for name in ("iwf", "other")
        ]
        for name in ("iwf", "other"):
            eventually(
                lambda name=name: lists.get_list(name).last_batch_id == f"held-{name}",
                f"the upload of {name} is open",
            )
        third = build_batch("iwf", "third", [upsert(SHA1, bytes(20), "T")])
        with pytest.raises(ResourceExhausted) as info:
            lists.upload_changes(iter([third]))
        assert "2 uploads of yours are in progress" in str(info.value)
        assert lists.get_list("iwf").last_batch_id == "held-iwf"
        theirs = build_batch("ncmec", "b-1", [upsert(SHA1, bytes(20), "B")])
        assert running.lists("hotline-b").upload_changes(iter([theirs])).batches_applied == 1
        release.set()
        assert [f.result(timeout=30).batches_applied for f in held] == [1, 1]
    assert lists.upload_changes(iter([third])).last_batch_id == "third"


def commits(running: Running) -> int:
    """Write transactions the store has committed so far."""
    return int(running.service.store.env.info()["last_txnid"])


def new_batches(
    list_name: str, prefix: str, n: int, size: int
) -> list[lists_pb2.ApplyChangesRequest]:
    rng = random.Random(prefix)
    return [
        build_batch(
            list_name,
            f"{prefix}-{b}",
            [upsert(SHA1, random_digest(rng, SHA1), f"{prefix}-{b}-{i}") for i in range(size)],
        )
        for b in range(n)
    ]


@pytest.fixture
def small_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups of 10 entries, growing to 40 for a list of 160 or more; never cut by time."""
    monkeypatch.setattr(list_service, "UPLOAD_GROUP_ENTRIES", 10)
    monkeypatch.setattr(list_service, "UPLOAD_GROUP_MAX_ENTRIES", 40)
    monkeypatch.setattr(list_service, "UPLOAD_GROUP_SECONDS", 1000.0)


def test_an_uploads_groups_grow_with_its_list(running: Running, small_groups: None) -> None:
    """Every commit into a list rewrites about all of its B-tree pages, so the groups of
    a big list's upload are larger: 8 batches of 10 into a list of 160 take 2 commits;
    4 into an empty list, 4. Each batch is still its own version, in order."""
    lists = running.lists()
    for name in ("big", "empty"):
        lists.create_list(name)
    lists.upload_changes(new_batches("big", "base", 16, 10))
    before = commits(running)
    summary = lists.upload_changes(new_batches("big", "more", 8, 10))
    assert (summary.batches_applied, summary.last_batch_id) == (8, "more-7")
    assert commits(running) - before == 2
    before = commits(running)
    lists.upload_changes(new_batches("empty", "more", 4, 10))
    assert commits(running) - before == 4
    assert sum(lists.get_list("big").counts.values()) == 240


def test_a_retraction_in_an_upload_is_committed_at_once_on_its_own(
    running: Running, small_groups: None
) -> None:
    """A batch with retirements ends the group before it (committed first, new entries in
    key order) and is committed alone, without waiting for a group to fill."""
    lists = running.lists()
    lists.create_list("big")
    base = new_batches("big", "base", 16, 10)
    lists.upload_changes(base)
    gone = base[0].upserts[0].hash
    before = commits(running)
    retraction = build_batch("big", "retract", [retire(SHA1, gone.value)])
    fresh = new_batches("big", "more", 2, 10)
    summary = lists.upload_changes([fresh[0], retraction, fresh[1]])
    assert (summary.batches_applied, summary.retired, summary.upserted) == (3, 1, 20)
    assert commits(running) - before == 3
    assert not running.matcher().match([gone]).matched


def test_one_upload_at_a_time_holds_a_large_group(running: Running, small_groups: None) -> None:
    """Large groups are held in memory until they commit: while one upload may grow its
    groups, another one's stay at UPLOAD_GROUP_ENTRIES; once it ends, the next may."""
    lists = running.lists()
    for name in ("one", "two"):
        lists.create_list(name)
        lists.upload_changes(new_batches(name, f"base-{name}", 16, 10))
    release = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        # Its first batch, a retraction, is committed at once: then it holds the group.
        retraction = retire(SHA1, bytes(20))
        held = pool.submit(
            lists.upload_changes, held_upload("one", "held-one", release, retraction)
        )
        eventually(lambda: lists.get_list("one").last_batch_id == "held-one", "held open")
        before = commits(running)
        lists.upload_changes(new_batches("two", "small", 8, 10))
        assert commits(running) - before == 8
        release.set()
        assert held.result(timeout=30).batches_applied == 1
    before = commits(running)
    lists.upload_changes(new_batches("two", "large", 8, 10))
    assert commits(running) - before == 2
