"""MatchService: a platform sends the hashes of an upload and gets a verdict.

The response names only the matching lists and reference IDs. Query hashes and item IDs
are used for the lookup and then dropped: never stored, never logged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import grpc

from hashmatch.client.algorithms import DIGEST_LENGTHS, PDQ
from hashmatch.server import validation
from hashmatch.server.core import LIST_THRESHOLD, UNKNOWN_QUALITY, pack_hashes
from hashmatch.server.errors import Violation, invalid
from hashmatch.server.follower import IndexFollower, ServedList
from hashmatch.server.handlers import require_role
from hashmatch.server.metrics import Metrics
from hashmatch.server.stats import MatchCounts
from hashmatch.server.store import Role, Store, Tenant
from hashmatch.server.validation import QueryHash
from hashmatch.server.wire import Undecodable
from hashmatch.v1 import match_pb2

_LENGTHS = dict(DIGEST_LENGTHS)
# Characters of an item_id that certainly fit MAX_ITEM_ID_BYTES in UTF-8 (4 bytes each).
_FAST_ID_CHARS = validation.MAX_ITEM_ID_BYTES // 4


def _plainly_valid(item: match_pb2.MatchRequest) -> list[QueryHash] | None:
    """The item's queries when it is valid by a quick, conservative test; else None.

    Accepts only what `validation.match_item` accepts (short printable IDs, known
    algorithms with the right digest length, PDQ quality 0-100); anything else goes through
    the full check, which names the offending field.
    """
    item_id = item.item_id
    if item_id and (len(item_id) > _FAST_ID_CHARS or not item_id.isprintable()):
        return None
    hashes = item.hashes
    if not hashes or len(hashes) > validation.MAX_HASHES_PER_ITEM:
        return None
    out = []
    for h in hashes:
        alg = h.algorithm
        value = h.value
        if _LENGTHS.get(alg) != len(value):
            return None
        if h.HasField("quality"):
            if alg != PDQ or h.quality > 100:
                return None
            out.append(QueryHash(alg, value, h.quality))
        else:
            out.append(QueryHash(alg, value, None))
    return out


class MatchServicer:
    def __init__(
        self,
        store: Store,
        follower: IndexFollower,
        counts: MatchCounts | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.follower = follower
        # Match events per (list, reference), flushed to the store by StatsFlusher.
        self.counts = counts
        self.metrics = metrics

    def Match(
        self, request: match_pb2.MatchRequest, context: grpc.ServicerContext, tenant: Tenant
    ) -> match_pb2.MatchResponse:
        require_role(tenant, Role.PLATFORM)
        queries = _plainly_valid(request)
        if queries is None:
            queries, violations = validation.match_item(request.item_id, request.hashes)
            if violations:
                raise invalid(violations)
        return self._respond([request.item_id], [queries])[0]

    def MatchBatch(
        self, request: match_pb2.MatchBatchRequest, context: grpc.ServicerContext, tenant: Tenant
    ) -> match_pb2.MatchBatchResponse:
        require_role(tenant, Role.PLATFORM)
        n = len(request.items)
        if n == 0:
            raise invalid([Violation("items", "at least one item is required")])
        if n > validation.MAX_MATCH_BATCH_ITEMS:
            raise invalid(
                [Violation("items", f"at most {validation.MAX_MATCH_BATCH_ITEMS} items, got {n}")]
            )
        results: list[match_pb2.MatchResponse | None] = [None] * n
        valid_at: list[int] = []
        valid_queries: list[list[QueryHash]] = []
        for i, item in enumerate(request.items):
            fast = _plainly_valid(item)
            if fast is not None:
                valid_at.append(i)
                valid_queries.append(fast)
                continue
            queries, violations = validation.match_item(item.item_id, item.hashes, f"items[{i}].")
            if violations:
                error = invalid(violations).to_status()
                results[i] = match_pb2.MatchResponse(item_id=item.item_id, error=error)
            else:
                valid_at.append(i)
                valid_queries.append(queries)
        answered = self._respond([request.items[i].item_id for i in valid_at], valid_queries)
        for i, response in zip(valid_at, answered, strict=True):
            results[i] = response
        return match_pb2.MatchBatchResponse(results=[r for r in results if r is not None])

    def MatchStream(
        self,
        requests: Iterator[match_pb2.MatchRequest | Undecodable],
        context: grpc.ServicerContext,
        tenant: Tenant,
    ) -> Iterator[match_pb2.MatchResponse]:
        """One response per request, in order; an invalid item gets its own error."""
        require_role(tenant, Role.PLATFORM)
        for request in requests:
            if isinstance(request, Undecodable):
                violation = Violation(request.field or "(request)", request.description)
                yield match_pb2.MatchResponse(error=invalid([violation]).to_status())
                continue
            queries = _plainly_valid(request)
            if queries is None:
                queries, violations = validation.match_item(request.item_id, request.hashes)
                if violations:
                    error = invalid(violations).to_status()
                    yield match_pb2.MatchResponse(item_id=request.item_id, error=error)
                    continue
            yield self._respond([request.item_id], [queries])[0]

    def _respond(
        self, item_ids: Sequence[str], items: Sequence[Sequence[QueryHash]]
    ) -> list[match_pb2.MatchResponse]:
        references = self.match(items)
        response = match_pb2.MatchResponse
        no_match, match = match_pb2.VERDICT_NO_MATCH, match_pb2.VERDICT_MATCH
        # Most uploads match nothing: build those without an empty references list.
        return [
            response(item_id=item_id, verdict=match, references=refs)
            if refs
            else response(item_id=item_id, verdict=no_match)
            for item_id, refs in zip(item_ids, references, strict=True)
        ]

    def match(self, items: Sequence[Sequence[QueryHash]]) -> list[list[match_pb2.Reference]]:
        """Every (list, reference) each item matches, in one call into the core."""
        owners: list[int] = []
        packed: list[tuple[int, bytes]] = []
        qualities = bytearray()
        for item_index, queries in enumerate(items):
            for q in queries:
                # Degenerate PDQ hashes (blank or flat images) would match each other.
                if q.algorithm == PDQ and validation.is_degenerate_pdq(q.value):
                    continue
                owners.append(item_index)
                packed.append((q.algorithm, q.value))
                qualities.append(UNKNOWN_QUALITY if q.quality is None else q.quality)
        out: list[list[match_pb2.Reference]] = [[] for _ in items]
        if not packed:
            return out
        algs, slots = pack_hashes(packed)
        hits = self.follower.index.match_batch(
            algs, slots, bytes(qualities), bytes([LIST_THRESHOLD]) * len(packed)
        )
        if not hits:
            return out
        keyed: dict[tuple[int, int, int], None] = {}
        for query_index, list_id, entry_id in hits:
            keyed[(owners[query_index], list_id, entry_id)] = None
        keys = list(keyed)
        served = self.follower.lists()
        refs = self.store.references([(lid, eid) for _, lid, eid in keys])
        seen: set[tuple[int, int, str]] = set()
        for (item_index, lid, _), ref in zip(keys, refs, strict=True):
            listed = served.get(lid)
            # None: retired after the index snapshot was taken, so no longer a match.
            if ref is None or listed is None or (item_index, lid, ref) in seen:
                continue
            seen.add((item_index, lid, ref))
            out[item_index].append(
                match_pb2.Reference(list=listed.name, reference_id=ref, list_version=listed.version)
            )
        self._count(seen, served)
        return out

    def _count(self, seen: set[tuple[int, int, str]], served: dict[int, ServedList]) -> None:
        """One match event per (item, list, reference): in memory, flushed later."""
        if not seen:
            return
        if self.counts is not None:
            self.counts.add([(lid, ref) for _, lid, ref in seen])
        if self.metrics is not None:
            for _, lid, _ in seen:
                self.metrics.matches.labels(served[lid].name).inc()
