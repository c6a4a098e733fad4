"""Labels on list entries: stored with the entry, covered by the digest, copied by replicas,
and shown to a platform only for the keys the list's owner exposes."""

from __future__ import annotations

import io
import json
import logging
import random
from collections.abc import Mapping
from pathlib import Path

import pytest
import xxhash

from conftest import Running, same_lists, start, start_replica
from hashmatch.client import (
    MD5,
    PDQ,
    SHA1,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    make_hash,
)
from hashmatch.client.cli import main
from hashmatch.client.digest import ListDigest, entry_term
from hashmatch.client.labels import LABEL_KEYS, label_problems, stored_labels
from hashmatch.client.list_client import Change
from hashmatch.client.report import CsvReport, JsonLinesReport
from hashmatch.client.results import FileResult, MatchResult, Reference, Verdict
from hashmatch.server import _hashcore
from hashmatch.server.logs import JsonFormatter
from hashmatch.server.store.checks import check_store
from hashmatch.v1 import lists_pb2, match_pb2
from helpers import eventually, hashes, random_digest, random_pdq

NCMEC = {"classification": "A1", "category": "csam", "source": "ncmec"}


def labelled(alg: int, value: bytes, ref: str, labels: Mapping[str, str]) -> Change:
    return Change(make_hash(alg, value), ref, dict(labels))


def match_refs(running: Running, alg: int, value: bytes) -> list[Reference]:
    result = running.matcher().match(hashes((alg, value)))
    return list(result.references)


def test_label_keys_are_one_set_in_core_and_client() -> None:
    assert tuple(_hashcore.label_keys()) == LABEL_KEYS


def test_labels_reach_a_platform_only_for_the_keys_the_owner_exposes(
    running: Running,
) -> None:
    rng = random.Random(1)
    lists = running.lists()
    lists.create_list("ncmec")
    md5, sha1 = random_digest(rng, MD5), random_digest(rng, SHA1)
    lists.apply_changes(
        "ncmec",
        "b1",
        [labelled(MD5, md5, "N-1", NCMEC), labelled(SHA1, sha1, "N-1", NCMEC)],
    )
    # Verdict-only stays the default: nothing but the reference.
    (ref,) = match_refs(running, MD5, md5)
    assert (ref.reference_id, ref.labels) == ("N-1", {})
    assert lists.get_list("ncmec").exposed_label_keys == ()

    before = lists.get_list("ncmec")
    info = lists.set_exposed_labels("ncmec", ["classification", "age_band"])
    assert info.exposed_label_keys == ("age_band", "classification")
    # A change-log event: a new version, the same content.
    assert (info.version, info.digest) == (before.version + 1, before.digest)
    (ref,) = match_refs(running, SHA1, sha1)
    assert ref.labels == {"classification": "A1"}
    assert ref.list_version == info.version

    lists.set_exposed_labels("ncmec", LABEL_KEYS)
    assert match_refs(running, MD5, md5)[0].labels == NCMEC
    lists.set_exposed_labels("ncmec", [])
    assert match_refs(running, MD5, md5)[0].labels == {}
    # The raw response carries no labels field at all when none are exposed.
    stub_response = running.matcher().match(hashes((MD5, md5)))
    assert stub_response.references[0].labels == {}


def test_a_platform_never_sees_another_lists_labels(running: Running) -> None:
    """Two hotlines list the same hash: each reference shows only its own list's exposed
    labels, and exposing keys on one list changes nothing for the other."""
    rng = random.Random(2)
    md5 = random_digest(rng, MD5)
    a, b = running.lists("hotline-a"), running.lists("hotline-b")
    a.create_list("iwf", exposed_label_keys=["category"])
    b.create_list("c3p")
    a.apply_changes("iwf", "1", [labelled(MD5, md5, "I-1", {"category": "A", "age_band": "0-2"})])
    b.apply_changes("c3p", "1", [labelled(MD5, md5, "C-1", {"category": "harmful-abusive"})])
    refs = {r.list: r.labels for r in match_refs(running, MD5, md5)}
    assert refs == {"iwf": {"category": "A"}, "c3p": {}}
    # Only the owner chooses: another hotline cannot expose a list it does not own, and a
    # platform cannot change exposure at all.
    with pytest.raises(NotFound):
        b.set_exposed_labels("iwf", ["age_band"])
    with pytest.raises(NotFound):
        a.set_exposed_labels("c3p", ["category"])
    with pytest.raises(PermissionDenied):
        running.lists("platform").set_exposed_labels("iwf", ["age_band"])
    refs = {r.list: r.labels for r in match_refs(running, MD5, md5)}
    assert refs == {"iwf": {"category": "A"}, "c3p": {}}


def test_unknown_exposed_keys_are_refused_by_name(running: Running) -> None:
    lists = running.lists()
    with pytest.raises(InvalidArgument) as err:
        lists.create_list("x", exposed_label_keys=["category", "colour"])
    assert [v.field for v in err.value.violations] == ["exposed_label_keys[1]"]
    assert "'colour'" in err.value.violations[0].description
    lists.create_list("y")
    with pytest.raises(InvalidArgument) as err:
        lists.set_exposed_labels("y", ["Category"])
    assert [v.field for v in err.value.violations] == ["exposed_label_keys.keys[0]"]
    assert lists.get_list("y").version == 0, "nothing changed"


def test_bad_labels_refuse_the_batch_by_field(running: Running) -> None:
    rng = random.Random(3)
    lists = running.lists()
    lists.create_list("l")
    bad = [
        ({"colour": "red"}, "upserts[0].labels", "unknown label key"),
        ({"category": ""}, "upserts[0].labels.category", "1-64 bytes"),
        ({"source": "x" * 65}, "upserts[0].labels.source", "got 65"),
        ({"baseline": "yes\n"}, "upserts[0].labels.baseline", "control characters"),
    ]
    for labels, field, words in bad:
        with pytest.raises(InvalidArgument) as err:
            lists.apply_changes("l", "b", [labelled(MD5, random_digest(rng, MD5), "R", labels)])
        (violation,) = err.value.violations
        assert (violation.field, words in violation.description) == (field, True), violation
        assert label_problems(labels), "the client's rules refuse it too"
    # One reference labelled two ways in one batch.
    with pytest.raises(InvalidArgument) as err:
        lists.apply_changes(
            "l",
            "b",
            [
                labelled(MD5, random_digest(rng, MD5), "R", {"category": "A"}),
                labelled(SHA1, random_digest(rng, SHA1), "R", {"category": "B"}),
            ],
        )
    assert [v.field for v in err.value.violations] == ["upserts[1].labels"]
    info = lists.get_list("l")
    assert (info.version, sum(info.counts.values())) == (0, 0), "nothing applied"
    # 64 bytes of UTF-8 and an '=' in a value are fine.
    lists.apply_changes(
        "l",
        "ok",
        [labelled(MD5, random_digest(rng, MD5), "R", {"source": "é" * 32, "age_band": "a=b"})],
    )


def test_digest_covers_labels_and_agrees_with_the_client(running: Running) -> None:
    rng = random.Random(4)
    lists = running.lists()
    lists.create_list("l")
    plain = [(MD5, random_digest(rng, MD5), f"P-{i}", {}) for i in range(5)]
    tagged = [
        (PDQ, random_pdq(rng), f"T-{i}", {"category": "B", "age_band": f"{i}"}) for i in range(5)
    ]
    entries = plain + tagged
    result = lists.apply_changes(
        "l", "1", [labelled(alg, v, ref, labels) for alg, v, ref, labels in entries]
    )
    digest = ListDigest()
    for alg, value, ref, labels in entries:
        digest.add(alg, value, ref, labels)
    assert result.digest == digest.hex() == lists.get_list("l").digest
    # An entry without labels adds what it always added: the pre-labels formula.
    alg, value, ref, _ = plain[0]
    assert entry_term(alg, value, ref) == xxhash.xxh3_128_intdigest(
        bytes((alg,)) + value + ref.encode()
    )
    alg, value, ref, labels = tagged[0]
    assert entry_term(alg, value, ref, labels) == _hashcore.entry_term(
        alg, value, ref.encode() + b"\0age_band=0\0category=B"
    )

    # Relabelling one entry (same hash, same reference) is a change the digest sees.
    result = lists.apply_changes("l", "2", [labelled(alg, value, ref, {"category": "C"})])
    assert result.upserted == 1
    digest.remove(alg, value, ref, labels)
    digest.add(alg, value, ref, {"category": "C"})
    assert result.digest == digest.hex()
    # Dropping its labels too; retiring it removes its labelled term.
    digest.remove(alg, value, ref, {"category": "C"})
    digest.add(alg, value, ref)
    assert (
        lists.apply_changes("l", "3", [Change(make_hash(alg, value), ref)]).digest == digest.hex()
    )
    alg, value, ref, labels = tagged[1]
    digest.remove(alg, value, ref, labels)
    assert (
        lists.apply_changes("l", "4", [Change(make_hash(alg, value), None)]).digest == digest.hex()
    )
    # admin check recomputes every digest from the stored entries, labels included.
    reports = list(check_store(running.service.store))
    assert [(r.name, r.ok, r.digest) for r in reports] == [("l", True, digest.hex())], reports


def test_a_resent_labelled_batch_is_recognised_whatever_its_map_order(running: Running) -> None:
    rng = random.Random(5)
    lists = running.lists()
    lists.create_list("l")
    value = random_digest(rng, MD5)
    first = {"category": "A", "classification": "A1", "source": "s"}
    again = dict(reversed(list(first.items())))
    assert list(again) != list(first)
    one = lists.apply_changes("l", "b", [labelled(MD5, value, "R", first)])
    two = lists.apply_changes("l", "b", [labelled(MD5, value, "R", again)])
    assert (two.already_applied, two.version) == (True, one.version)


def test_watch_changes_carries_labels_and_exposure_events(running: Running) -> None:
    rng = random.Random(6)
    lists = running.lists()
    lists.create_list("l")
    value = random_digest(rng, MD5)
    lists.apply_changes("l", "1", [labelled(MD5, value, "R", NCMEC)])
    lists.set_exposed_labels("l", ["source"])
    batches = []
    for batch in lists.watch_changes("l", timeout=10):
        batches.append(batch)
        if len(batches) == 2:
            break
    entry = batches[0].upserts[0]
    assert (entry.reference_id, dict(entry.labels)) == ("R", NCMEC)
    assert list(batches[1].exposed_label_keys.keys) == ["source"]
    assert not batches[1].upserts and not batches[1].batch_id


def test_a_replica_copies_labels_and_follows_exposure(tmp_path: Path) -> None:
    rng = random.Random(7)
    primary = start(tmp_path / "primary")
    replica = start_replica(tmp_path / "replica", primary.address, primary.tokens)
    try:
        lists = primary.lists()
        lists.create_list("iwf", exposed_label_keys=["category"])
        md5 = random_digest(rng, MD5)
        lists.apply_changes(
            "iwf", "1", [labelled(MD5, md5, "I-1", {"category": "A", "age_band": "3-6"})]
        )
        eventually(lambda: same_lists(primary, replica), "replica holds the labelled list")
        assert replica.lists("replica").get_list("iwf").exposed_label_keys == ("category",)
        assert match_refs(replica, MD5, md5)[0].labels == {"category": "A"}

        lists.set_exposed_labels("iwf", ["age_band", "category"])
        eventually(
            lambda: match_refs(replica, MD5, md5)[0].labels == {"category": "A", "age_band": "3-6"},
            "the replica shows the newly exposed key",
        )
        assert same_lists(primary, replica)
        lists.set_exposed_labels("iwf", [])
        eventually(
            lambda: match_refs(replica, MD5, md5)[0].labels == {},
            "the replica stops showing labels",
        )
        assert [r.ok for r in check_store(replica.service.store)] == [True]
    finally:
        replica.service.stop()
        primary.service.stop()


def test_labels_are_never_logged(running: Running) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        rng = random.Random(8)
        lists = running.lists()
        lists.create_list("l", exposed_label_keys=LABEL_KEYS)
        value = random_digest(rng, MD5)
        secret = {"category": "label-value-7f3a", "source": "label-source-9c1e"}
        lists.apply_changes("l", "1", [labelled(MD5, value, "R", secret)])
        assert match_refs(running, MD5, value)[0].labels == secret
        assert match_refs(running, MD5, random_digest(rng, MD5)) == []
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    logged = out.getvalue()
    assert logged, "the server logged its calls"
    assert "label-value-7f3a" not in logged and "label-source-9c1e" not in logged


def test_sdk_results_and_scan_reports_show_labels(tmp_path: Path) -> None:
    response = match_pb2.MatchResponse(
        item_id="1",
        verdict=match_pb2.VERDICT_MATCH,
        references=[
            match_pb2.Reference(
                list="iwf", reference_id="I;1", list_version=3, labels={"source": "a,b;c"}
            ),
            match_pb2.Reference(list="c3p", reference_id="C-1", list_version=1),
        ],
    )
    result = MatchResult.from_proto(response)
    assert [r.labels for r in result.references] == [{"source": "a,b;c"}, {}]
    file_result = FileResult.from_match("a.jpg", result, reason=None, size=1)
    assert file_result.verdict is Verdict.MATCH
    jsonl, csv_path = tmp_path / "r.jsonl", tmp_path / "r.csv"
    for writer in (JsonLinesReport(jsonl), CsvReport(csv_path)):
        writer.write(file_result)
        writer.close()
    record = json.loads(jsonl.read_text())
    assert [r["labels"] for r in record["references"]] == [{"source": "a,b;c"}, {}]
    header, row = csv_path.read_text().splitlines()
    assert header.split(",")[-1] == "labels"
    assert row.endswith(",source=a%2Cb%3Bc;")
    assert lists_pb2.Entry(labels={"category": "A"}).labels["category"] == "A"


def test_the_command_line_exposes_and_shows_labels(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    def cli(tenant: str, *args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--server", running.address, "--token", running.tokens[tenant], *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = cli("hotline-a", "create-list", "iwf", "--expose-labels", "category")
    assert code == 0 and out.rstrip().endswith("exposed_labels=category"), out
    code, _, err = cli("hotline-a", "create-list", "bad", "--expose-labels", "colour")
    assert code != 0 and "colour" in err
    value = random_digest(random.Random(9), MD5)
    running.lists().apply_changes(
        "iwf", "1", [labelled(MD5, value, "I-1", {"category": "A", "source": "s"})]
    )
    code, out, _ = cli("platform", "match", "--md5", value.hex())
    assert (code, out.splitlines()[1].split()[3:]) == (1, ["category=A"]), out
    assert cli("hotline-a", "expose-labels", "iwf", "category", "source")[1] == (
        "iwf\texposed_labels=category,source\n"
    )
    code, out, _ = cli("hotline-a", "expose-labels", "iwf", "--none", "--json")
    assert json.loads(out) == {"list": "iwf", "exposed_label_keys": []}
    assert cli("hotline-a", "expose-labels", "iwf")[1] == "iwf\texposed_labels=-\n"
    code, out, _ = cli("platform", "match", "--md5", value.hex())
    assert out.splitlines()[1].split()[3:] == []


def test_the_core_reads_labels_as_the_protobuf_runtime_writes_them() -> None:
    """Random labelled batches, serialised by the protobuf runtime: the core stores each
    entry's labels in the documented form, its digest terms equal the client's, and the
    change log's columns encode back to the same entries."""
    rng = random.Random(10)
    alphabet = "aZ09 =-_.é中🙂,;%"
    for _ in range(200):
        entries = []
        for i in range(rng.randint(1, 6)):
            keys = rng.sample(LABEL_KEYS, rng.randint(0, len(LABEL_KEYS)))
            labels = {k: "".join(rng.choices(alphabet, k=rng.randint(1, 12))) for k in keys}
            value = make_hash(MD5, random_digest(rng, MD5))
            entries.append(lists_pb2.Entry(hash=value, reference_id=f"R{i}", labels=labels))
        raw = lists_pb2.ApplyChangesRequest(list="l", batch_id="b", upserts=entries)
        changes = _hashcore.parse_changes(raw.SerializeToString(), 50)
        assert changes.violations == []
        stored = changes.references()
        for i, entry in enumerate(entries):
            labels = dict(entry.labels)
            assert stored[i] == entry.reference_id.encode() + stored_labels(labels)
            assert changes.term(i) == entry_term(MD5, entry.hash.value, entry.reference_id, labels)
        ends, refs = changes.reference_columns()
        algs, slots = changes.upsert_packed()
        field = lists_pb2.ChangeBatch.DESCRIPTOR.fields_by_name["upserts"].number
        batch = lists_pb2.ChangeBatch.FromString(
            _hashcore.encode_entries(field, algs, slots, ends, refs)
        )
        assert [(e.reference_id, dict(e.labels)) for e in batch.upserts] == [
            (e.reference_id, dict(e.labels)) for e in entries
        ]


def test_a_labelled_list_file_pushes_with_a_digest_that_agrees(
    running: Running, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A list file's label columns reach the service: the file's digest (computed by the
    client) equals the list's, and exposed labels reach the platform."""
    rng = random.Random(11)
    rows = [(random_digest(rng, MD5), random_digest(rng, SHA1), f"R-{i}") for i in range(20)]
    path = tmp_path / "list.csv"
    path.write_text(
        "MD5,SHA1,ID,Category,Classification\n"
        + "".join(f"{m.hex()},{s.hex()},{ref},A,A{i % 3}\n" for i, (m, s, ref) in enumerate(rows))
    )
    running.lists().create_list("l", exposed_label_keys=["classification"])
    argv = ["--server", running.address, "--token", running.tokens["hotline-a"]]
    capsys.readouterr()
    assert main([*argv, "push", "l", str(path)]) == 0
    assert main([*argv, "digest", str(path)]) == 0
    file_digest = capsys.readouterr().out.strip().splitlines()[-1]
    assert file_digest == running.lists().get_list("l").digest
    (ref,) = match_refs(running, SHA1, rows[4][1])
    assert (ref.reference_id, ref.labels) == ("R-4", {"classification": "A1"})


def test_who_exposed_which_keys_is_audited(running: Running) -> None:
    lists = running.lists()
    lists.create_list("l", exposed_label_keys=["source"])
    lists.set_exposed_labels("l", ["category", "baseline"])
    records = lists.audit_log("l", actions=["create-list", "update-list"])
    got = [(r.actor, r.action, json.loads(r.details)["exposed_label_keys"]) for r in records]
    assert got == [
        ("hotline-a", "create-list", ["source"]),
        ("hotline-a", "update-list", ["baseline", "category"]),
    ]
