"""A benign demo list, so a new user sees a real MATCH on a fresh data folder.

It holds the digests and the PDQ hash of a public test photo (a bridge, from the PDQ
reference implementation's test data), like the "test" lists real matching services offer.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from hashmatch.client.algorithms import MD5, PDQ, SHA1, SHA256
from hashmatch.server.core import parse_changes
from hashmatch.server.store import Role, Store, TenantExists
from hashmatch.v1 import hashes_pb2, lists_pb2

log = logging.getLogger(__name__)

DEMO_LIST = "demo"
DEMO_HOTLINE = "demo-hotline"
DEMO_PLATFORM = "demo-platform"
TOKEN_FILE = "demo-platform.token"

BRIDGE = {
    MD5: "d35c785545392755e7e4164457657269",
    SHA1: "ea45d7166b30f98aac6af52f952193ce3083cb4c",
    SHA256: "b5b0799616df52d475a3968dc7e54f1d0724c912244ffa6175bc786375dd7298",
    PDQ: "d8f8f0cee0f4a84f0637022a078f67f0b36e2ed596621e1d33e6339c4e9c9b22",
}


def ensure_demo(store: Store, data_dir: Path) -> None:
    """Creates the demo tenants and list once; a later start leaves them as they are."""
    if store.get_list(DEMO_LIST) is not None:
        return
    with contextlib.suppress(TenantExists):
        store.add_tenant(DEMO_HOTLINE, Role.HOTLINE)
    store.create_list(DEMO_LIST, DEMO_HOTLINE, pdq_threshold=31, pdq_min_quality=50)
    request = lists_pb2.ApplyChangesRequest(
        list=DEMO_LIST,
        batch_id="demo-1",
        upserts=[
            lists_pb2.Entry(
                hash=hashes_pb2.Hash(algorithm=alg, value=bytes.fromhex(h)),  # type: ignore[arg-type]
                reference_id=f"DEMO-BRIDGE-{i + 1}",
            )
            for i, (alg, h) in enumerate(BRIDGE.items())
        ],
        expected_version=0,
    )
    store.apply_changes(
        DEMO_LIST, parse_changes(request.SerializeToString(), 50), actor=DEMO_HOTLINE
    )
    try:
        token = store.add_tenant(DEMO_PLATFORM, Role.PLATFORM)
    except TenantExists:
        token = store.issue_token(DEMO_PLATFORM)
    path = data_dir / TOKEN_FILE
    path.write_text(token + "\n")
    path.chmod(0o600)
    log.info("created the demo list; a platform token for it is in %s", path)
