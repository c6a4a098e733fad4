"""Acknowledged batches survive a restart; a new process rebuilds its indexes from LMDB."""

from __future__ import annotations

import random
from pathlib import Path

from conftest import start
from hashmatch.client import MD5, PDQ, SHA256
from helpers import flip_bits, hashes, random_digest, random_pdq, retire, upsert


def test_restart_keeps_every_acknowledged_batch(tmp_path: Path) -> None:
    rng = random.Random(11)
    md5s = [random_digest(rng, MD5) for _ in range(50)]
    pdq = random_pdq(rng)
    sha = random_digest(rng, SHA256)

    first = start(tmp_path)
    lists = first.lists()
    lists.create_list("iwf")
    lists.apply_changes("iwf", "b1", [upsert(MD5, v, f"M-{i}") for i, v in enumerate(md5s)])
    lists.apply_changes("iwf", "b2", [upsert(PDQ, pdq, "P-1"), upsert(SHA256, sha, "S-1")])
    lists.apply_changes("iwf", "b3", [retire(MD5, md5s[0])])
    before = lists.get_list("iwf")
    lists.close()
    first.service.stop(grace=0)

    second = start(tmp_path, first.tokens)
    try:
        after = second.lists().get_list("iwf")
        assert (after.version, after.counts, after.digest) == (
            before.version,
            before.counts,
            before.digest,
        )
        client = second.matcher()
        assert not client.match(hashes((MD5, md5s[0]))).matched
        assert [r.reference_id for r in client.match(hashes((MD5, md5s[7]))).references] == ["M-7"]
        assert client.match(hashes((PDQ, flip_bits(pdq, 20, rng)))).matched
        assert client.match(hashes((SHA256, sha))).matched
        # batch IDs are remembered across restarts too.
        again = second.lists().apply_changes(
            "iwf", "b2", [upsert(PDQ, pdq, "P-1"), upsert(SHA256, sha, "S-1")]
        )
        assert again.already_applied and again.version == 2
    finally:
        second.service.stop(grace=0)


def test_digest_matches_a_client_side_computation(tmp_path: Path) -> None:
    from hashmatch.client.digest import ListDigest

    rng = random.Random(12)
    running = start(tmp_path)
    try:
        lists = running.lists()
        lists.create_list("iwf")
        entries = [(MD5, random_digest(rng, MD5), f"R-{i}") for i in range(10)]
        entries.append((PDQ, random_pdq(rng), "P"))
        lists.apply_changes("iwf", "b1", [upsert(a, v, r) for a, v, r in entries])
        lists.apply_changes(
            "iwf", "b2", [retire(MD5, entries[0][1]), upsert(MD5, entries[1][1], "NEW")]
        )
        expected = ListDigest()
        for alg, value, ref in entries[2:]:
            expected.add(alg, value, ref)
        expected.add(MD5, entries[1][1], "NEW")
        assert lists.get_list("iwf").digest == expected.hex()
    finally:
        running.service.stop(grace=0)
