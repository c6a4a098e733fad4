"""Two serving processes on one data folder: a change through one is served by the other."""

from __future__ import annotations

import random
from pathlib import Path

from hashmatch.client import MD5, PDQ, Connection, ListClient, MatchClient
from hashmatch.server.store import Role, Store
from helpers import eventually, hashes, launch, random_digest, random_pdq, retire, upsert


def test_a_retraction_through_one_process_is_honoured_by_the_other(tmp_path: Path) -> None:
    rng = random.Random(5)
    md5, pdq = random_digest(rng, MD5), random_pdq(rng)
    store = Store(tmp_path)
    hotline = store.add_tenant("hotline", Role.HOTLINE)
    platform = store.add_tenant("platform", Role.PLATFORM)
    store.close()
    (a, address_a), (b, address_b) = launch(tmp_path), launch(tmp_path)
    try:
        lists = ListClient(Connection(server=address_a, token=hotline))
        other = MatchClient(Connection(server=address_b, token=platform))
        lists.create_list("iwf")
        lists.apply_changes("iwf", "b1", [upsert(MD5, md5, "R-1"), upsert(PDQ, pdq, "R-2")])

        def verdicts() -> tuple[bool, bool]:
            return (
                other.match(hashes((MD5, md5))).matched,
                other.match(hashes((PDQ, pdq))).matched,
            )

        eventually(lambda: verdicts() == (True, True), "the other process serves the batch")
        lists.apply_changes("iwf", "b2", [retire(MD5, md5), retire(PDQ, pdq)])
        eventually(lambda: verdicts() == (False, False), "the other process honours it")
        lists.close()
        other.close()
    finally:
        for proc in (a, b):
            proc.terminate()
            proc.wait()
