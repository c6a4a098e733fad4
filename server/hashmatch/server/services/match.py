"""MatchService: a platform sends the hashes of an upload and gets a verdict.

The request bytes go to the match path (`matching/matcher.py`) as they arrived; the
response bytes come back ready to send. The response names only the matching lists and
reference IDs. Query hashes and item IDs are used for the lookup and then dropped: never
stored, never logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from hashmatch.server.errors import InvalidArgument, Refusal
from hashmatch.server.matching.matcher import Matcher
from hashmatch.server.services.access import require_role
from hashmatch.server.store import Role, Tenant

Meter = Callable[[int], None]
# Stream messages up to this size are answered on the event loop; larger ones (many PDQ
# hashes) on the thread pool, where the core releases the GIL.
INLINE_MESSAGE_BYTES = 4096


class MatchServicer:
    # Requests arrive as bytes, with a meter for the items they turn out to hold.
    RAW = frozenset({"Match", "MatchBatch", "MatchStream", "MatchBatchStream"})
    # Cheap enough to answer on the event loop (large requests still go to the pool).
    INLINE = frozenset({"Match", "MatchBatch"})

    def __init__(self, matcher: Matcher) -> None:
        self.matcher = matcher

    def Match(self, raw: bytes, tenant: Tenant, meter: Meter) -> bytes:
        """A MatchResponse, encoded."""
        require_role(tenant, Role.PLATFORM)
        answer = self.matcher.answer(raw, tenant.name, batch=False, whole_call=True)
        meter(answer.items)
        return answer.response

    def MatchBatch(self, raw: bytes, tenant: Tenant, meter: Meter) -> bytes:
        """A MatchBatchResponse, encoded: results in request order, an invalid item with
        its own error."""
        require_role(tenant, Role.PLATFORM)
        answer = self.matcher.answer(raw, tenant.name, batch=True, whole_call=False)
        meter(answer.items)
        return answer.response

    async def MatchStream(
        self, requests: AsyncIterator[bytes], tenant: Tenant, meter: Meter
    ) -> AsyncIterator[bytes]:
        """One response (encoded) per request, in order; an invalid item gets its own error."""
        require_role(tenant, Role.PLATFORM)
        answer = self.matcher.answer
        async for raw in requests:
            meter(1)
            if len(raw) <= INLINE_MESSAGE_BYTES:
                yield answer(raw, tenant.name, batch=False, whole_call=False).response
            else:
                found = await asyncio.to_thread(
                    answer, raw, tenant.name, batch=False, whole_call=False
                )
                yield found.response

    async def MatchBatchStream(
        self, requests: AsyncIterator[bytes], tenant: Tenant, meter: Meter
    ) -> AsyncIterator[bytes | Refusal]:
        """One MatchBatchResponse (encoded) per request, in order, each as MatchBatch would
        answer it. A message refused as a whole (no items, too many) is answered with its
        refusal, which the transport sends as that response's `error`; the stream goes on."""
        require_role(tenant, Role.PLATFORM)
        answer = self.matcher.answer
        async for raw in requests:
            try:
                if len(raw) <= INLINE_MESSAGE_BYTES:
                    found = answer(raw, tenant.name, batch=True, whole_call=False)
                else:
                    found = await asyncio.to_thread(
                        answer, raw, tenant.name, batch=True, whole_call=False
                    )
            except InvalidArgument as refused:
                meter(1)
                yield refused
                continue
            meter(found.items)
            yield found.response
