"""Per-list read grants: a feed a partner (another hotline, a platform's own mirror) can
hold without the all-lists replica role."""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Running, same_lists, start, start_replica
from hashmatch.client import MD5, InvalidArgument, NotFound, PermissionDenied
from hashmatch.client.cli import main as cli_main
from hashmatch.client.list_client import ListClient
from hashmatch.v1 import lists_pb2
from helpers import eventually, random_digest, upsert

LIST = "iwf-feed"


@pytest.fixture
def feed(running: Running) -> Iterator[ListClient]:
    owner = running.lists("hotline-a")
    owner.create_list(LIST)
    rng = random.Random(5)
    owner.apply_changes(LIST, "b1", [upsert(MD5, random_digest(rng, MD5), "R-1")])
    owner.apply_changes(LIST, "b2", [upsert(MD5, random_digest(rng, MD5), "R-2")])
    yield owner


class Watcher:
    """A WatchChanges stream read on a thread: its batches, then how it ended."""

    def __init__(self, client: ListClient, name: str, since: int = 0) -> None:
        self.batches: queue.Queue[lists_pb2.ChangeBatch] = queue.Queue()
        self.ended: queue.Queue[BaseException | None] = queue.Queue()
        self.stream = client.watch_changes(name, since, timeout=30)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for batch in self.stream:
                self.batches.put(batch)
        except BaseException as exc:
            self.ended.put(exc)
        else:
            self.ended.put(None)

    def next_batch(self) -> lists_pb2.ChangeBatch:
        return self.batches.get(timeout=10)

    def end(self) -> BaseException | None:
        return self.ended.get(timeout=10)


def test_an_owner_watches_its_own_list(running: Running, feed: ListClient) -> None:
    watcher = Watcher(feed, LIST)
    assert [watcher.next_batch().batch_id for _ in range(2)] == ["b1", "b2"]
    feed.apply_changes(LIST, "b3", [upsert(MD5, bytes(range(16)), "R-3")])
    assert watcher.next_batch().batch_id == "b3"


def test_a_grantee_gets_and_watches_the_one_list(running: Running, feed: ListClient) -> None:
    partner = running.lists("hotline-b")
    running.lists("hotline-a").create_list("not-shared")
    with pytest.raises(NotFound):
        partner.get_list(LIST)
    assert feed.grant_access(LIST, "hotline-b") is True
    assert feed.grant_access(LIST, "hotline-b") is False, "granting twice changes nothing"
    assert partner.get_list(LIST).version == 2
    assert [x.name for x in partner.list_lists()] == [LIST]
    watcher = Watcher(partner, LIST, since=1)
    assert watcher.next_batch().batch_id == "b2"
    feed.apply_changes(LIST, "b3", [upsert(MD5, bytes(range(16)), "R-3")])
    assert watcher.next_batch().batch_id == "b3"
    # Nothing else: not the owner's other list, nor any owner-only call.
    with pytest.raises(NotFound):
        partner.get_list("not-shared")
    with pytest.raises(PermissionDenied) as err:
        partner.apply_changes(LIST, "evil", [upsert(MD5, bytes(16), "EVIL")])
    assert err.value.reason == "ERROR_REASON_NOT_LIST_OWNER"
    with pytest.raises(PermissionDenied):
        partner.reference_stats(LIST)
    with pytest.raises(PermissionDenied):
        partner.grant_access(LIST, "platform")
    with pytest.raises(PermissionDenied):
        partner.list_grants(LIST)
    grants = feed.list_grants(LIST)
    assert [(g.tenant, g.granted_by) for g in grants] == [("hotline-b", "hotline-a")]
    actions = [(e["action"], e.get("tenant")) for e in running.service.store.audit_log()]
    assert ("grant-access", "hotline-b") in actions


def test_a_non_grantee_gets_not_found(running: Running, feed: ListClient) -> None:
    feed.grant_access(LIST, "hotline-b")
    for tenant in ("platform", "hotline-b"):
        other = running.lists(tenant)
        with pytest.raises(NotFound):
            other.get_list("iwf-feed-2")
    with pytest.raises(NotFound):
        running.lists("platform").get_list(LIST)
    with pytest.raises(NotFound):
        next(iter(running.lists("platform").watch_changes(LIST, timeout=5)))
    assert running.lists("platform").list_lists() == []


def test_revoking_ends_reads_and_open_streams(running: Running, feed: ListClient) -> None:
    partner = running.lists("hotline-b")
    feed.grant_access(LIST, "hotline-b")
    watcher = Watcher(partner, LIST)
    assert watcher.next_batch().batch_id == "b1"
    assert watcher.next_batch().batch_id == "b2"
    # The stream now waits for new batches; the revocation ends it.
    assert feed.revoke_access(LIST, "hotline-b") is True
    assert feed.revoke_access(LIST, "hotline-b") is False
    ended = watcher.end()
    assert isinstance(ended, NotFound), ended
    with pytest.raises(NotFound):
        partner.get_list(LIST)
    assert partner.list_lists() == []
    assert feed.list_grants(LIST) == []
    actions = [(e["action"], e.get("tenant")) for e in running.service.store.audit_log()]
    assert ("revoke-access", "hotline-b") in actions
    # A grant again, and a revocation while batches are coming: the stream ends before
    # the first batch committed after it.
    feed.grant_access(LIST, "hotline-b")
    watcher = Watcher(partner, LIST, since=2)
    feed.apply_changes(LIST, "b3", [upsert(MD5, bytes(range(16)), "R-3")])
    assert watcher.next_batch().batch_id == "b3"
    feed.revoke_access(LIST, "hotline-b")
    feed.apply_changes(LIST, "b4", [upsert(MD5, bytes(range(1, 17)), "R-4")])
    assert isinstance(watcher.end(), NotFound)
    assert watcher.batches.empty()


def test_a_platform_grantee_reads_but_cannot_write(running: Running, feed: ListClient) -> None:
    mirror = running.lists("platform")
    feed.grant_access(LIST, "platform")
    assert mirror.get_list(LIST).owner == "hotline-a"
    assert [x.name for x in mirror.list_lists()] == [LIST]
    watcher = Watcher(mirror, LIST)
    assert watcher.next_batch().batch_id == "b1"
    for write in (
        lambda: mirror.apply_changes(LIST, "evil", [upsert(MD5, bytes(16), "EVIL")]),
        lambda: mirror.set_flood_policy(LIST, factor=0, min_matches=1, window_seconds=60),
        lambda: mirror.release(LIST, ["R-1"]),
        lambda: mirror.grant_access(LIST, "hotline-b"),
        lambda: mirror.create_list("mine"),
    ):
        with pytest.raises(PermissionDenied) as err:
            write()
        assert err.value.reason == "ERROR_REASON_WRONG_ROLE"
    assert feed.get_list(LIST).version == 2


def test_grant_requests_are_checked(running: Running, feed: ListClient) -> None:
    with pytest.raises(InvalidArgument) as err:
        feed.grant_access(LIST, "nobody")
    assert [v.field for v in err.value.violations] == ["tenant"]
    assert "no such tenant" in err.value.message
    with pytest.raises(InvalidArgument):
        feed.grant_access(LIST, "hotline-a")  # the owner itself
    with pytest.raises(InvalidArgument):
        feed.grant_access(LIST, "")
    # Only the owner hears about tenant names: anyone else first hears of the list.
    other = running.lists("hotline-b")
    with pytest.raises(NotFound):
        other.grant_access(LIST, "nobody")
    with pytest.raises(NotFound):
        other.revoke_access(LIST, "platform")
    with pytest.raises(NotFound):
        other.list_grants(LIST)
    with pytest.raises(PermissionDenied):
        running.lists("replica").grant_access(LIST, "platform")


def test_cli_grant_revoke_and_grants(
    running: Running, feed: ListClient, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = ["--server", running.address, "--token", running.tokens["hotline-a"]]
    assert cli_main([*base, "grant", LIST, "hotline-b"]) == 0
    assert "hotline-b may now read iwf-feed" in capsys.readouterr().out
    assert cli_main([*base, "grants", LIST]) == 0
    assert capsys.readouterr().out.startswith("hotline-b\tsince ")
    assert running.lists("hotline-b").get_list(LIST).name == LIST
    assert cli_main([*base, "revoke", LIST, "hotline-b"]) == 0
    assert "hotline-b may no longer read iwf-feed" in capsys.readouterr().out
    assert cli_main([*base, "grant", LIST, "nobody"]) == 2
    assert "no such tenant" in capsys.readouterr().err


def _reads(client: ListClient, name: str) -> bool:
    try:
        client.get_list(name)
    except NotFound:
        return False
    return True


def test_replicas_copy_grants_and_revocations(tmp_path: Path) -> None:
    primary = start(tmp_path / "primary")
    replica = None
    try:
        owner = primary.lists("hotline-a")
        owner.create_list(LIST)
        owner.apply_changes(LIST, "b1", [upsert(MD5, bytes(range(16)), "R-1")])
        # Granted before the replica exists: on its stream the grant comes before the list.
        assert owner.grant_access(LIST, "hotline-b") is True
        replica = start_replica(tmp_path / "replica", primary.address, primary.tokens)
        eventually(lambda: same_lists(primary, replica), "replica holds the primary's lists")
        partner = replica.lists("hotline-b")
        eventually(lambda: _reads(partner, LIST), "the grantee reads the list on the replica")
        assert partner.get_list(LIST).version == 1
        assert [x.name for x in partner.list_lists()] == [LIST]
        watcher = Watcher(partner, LIST)
        assert watcher.next_batch().batch_id == "b1"
        owner.apply_changes(LIST, "b2", [upsert(MD5, bytes(range(1, 17)), "R-2")])
        assert watcher.next_batch().batch_id == "b2"
        # Not to another tenant.
        with pytest.raises(NotFound):
            replica.lists("platform").get_list(LIST)

        # A revocation on the primary reaches the replica, and ends the open stream there.
        assert owner.revoke_access(LIST, "hotline-b") is True
        eventually(lambda: not _reads(partner, LIST), "the replica answers NOT_FOUND")
        assert isinstance(watcher.end(), NotFound)
        with pytest.raises(NotFound):
            next(iter(partner.watch_changes(LIST, timeout=5)))
        assert partner.list_lists() == []

        # A grant made while the replica follows reaches it too.
        owner.grant_access(LIST, "hotline-b")
        eventually(lambda: _reads(partner, LIST), "a new grant reaches the replica")
        watcher = Watcher(partner, LIST, since=1)
        assert watcher.next_batch().batch_id == "b2"
    finally:
        if replica is not None:
            replica.service.stop(grace=0)
        primary.service.stop(grace=0)
