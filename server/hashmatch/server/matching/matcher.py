"""The match path: a MatchRequest or MatchBatchRequest, as bytes, to the response bytes.

The core reads and checks the request (one set of field rules, the same violations for
every method), matches it against every list, applies the tenant's subscriptions and
allow-list, leaves quarantined references out, counts the matches per reference and writes
the response. Reference IDs live in the core beside the index: no store read per match.
What stays here is the one rule that needs the tenant's history: probe detection, per
item. Query hashes and item IDs are never kept or logged.
"""

from __future__ import annotations

from dataclasses import dataclass

from hashmatch.server.core import Index
from hashmatch.server.errors import ProbeThrottled, Violation, invalid
from hashmatch.server.matching.probes import VIDEO_FRAMES_SEEN, ProbeDetector

PAUSED = (
    "PDQ queries from this tenant are paused: its recent queries look like a probe of a listed hash"
)


@dataclass(frozen=True)
class Answer:
    response: bytes
    # Match items charged to the tenant: a video item counts one per frame searched.
    items: int


class Matcher:
    def __init__(self, index: Index, probes: ProbeDetector) -> None:
        self.index = index
        self.probes = probes

    def answer(self, raw: bytes, tenant: str, *, batch: bool, whole_call: bool) -> Answer:
        """The encoded response to one request.

        `whole_call`: a refusal of the request as a whole (bad fields of a single Match, a
        paused tenant's PDQ query) raises; otherwise (a MatchStream message) the refusal is
        the item's own error in the response. A batch always answers per item, except for
        what concerns the whole batch (no items, too many).
        """
        verdicts = self.index.match_request(raw, batch, tenant)
        if verdicts.violations and (whole_call or batch):
            raise invalid([Violation(f, d) for f, d in verdicts.violations])
        if not verdicts.has_pdq:  # the common case: no probe state to read
            return Answer(verdicts.encode(), verdicts.cost)
        paused = self.probes.throttled_for(tenant)
        if paused:
            # Its PDQ items were searched, but none is answered: each gets the pause.
            if whole_call:
                raise ProbeThrottled(PAUSED, retry_after=paused)
            return Answer(verdicts.encode(0, int(paused * 1000)), verdicts.cost)
        refuse_from = -1
        flagged_at = self.probes.observe_items(
            tenant, verdicts.pdq_queries(), verdicts.video_queries(VIDEO_FRAMES_SEEN)
        )
        if flagged_at is not None:
            refuse_from = flagged_at
        retry_ms = int(self.probes.policy.cooldown * 1000)
        return Answer(verdicts.encode(refuse_from, retry_ms), verdicts.cost)
