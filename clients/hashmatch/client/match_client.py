"""Platform SDK: send the hashes of an upload, get a verdict."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType

from hashmatch.client.connection import Connection
from hashmatch.client.results import MatchResult
from hashmatch.v1 import hashes_pb2, match_pb2, match_pb2_grpc

Item = tuple[str, Sequence[hashes_pb2.Hash]]


class MatchClient:
    """Synchronous client for MatchService. Thread-safe; reuse one per process."""

    def __init__(self, connection: Connection | None = None) -> None:
        self.connection = connection or Connection.from_env()
        self._channel = self.connection.open_channel()
        self._stub = match_pb2_grpc.MatchServiceStub(self._channel)

    def match(self, hashes: Sequence[hashes_pb2.Hash], item_id: str = "") -> MatchResult:
        request = match_pb2.MatchRequest(item_id=item_id, hashes=hashes)
        response = self.connection.call(
            lambda: self._stub.Match(
                request, timeout=self.connection.timeout, metadata=self.connection.metadata()
            )
        )
        return MatchResult.from_proto(response)

    def match_batch(self, items: Iterable[Item]) -> list[MatchResult]:
        """Results in request order; a refused item has `error` set, the rest are answered."""
        request = match_pb2.MatchBatchRequest(
            items=[match_pb2.MatchRequest(item_id=i, hashes=h) for i, h in items]
        )
        response = self.connection.call(
            lambda: self._stub.MatchBatch(
                request, timeout=self.connection.timeout, metadata=self.connection.metadata()
            )
        )
        return [MatchResult.from_proto(r) for r in response.results]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> MatchClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
