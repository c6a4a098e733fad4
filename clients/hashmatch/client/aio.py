"""asyncio platform SDK: the same calls as `MatchClient`, on grpc.aio.

Deadlines, retries (the shared `RetryPolicy`, RetryInfo honoured), TLS and typed errors
behave exactly as in the synchronous client. Open the client inside the event loop that uses
it (``async with AsyncMatchClient(...) as client``). File hashing is CPU work: `match_file`
and `match_files` run it in a worker thread so the loop keeps serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from types import TracebackType

import grpc

from hashmatch.client.connection import Connection
from hashmatch.client.errors import from_rpc_error, from_status
from hashmatch.client.match_client import (
    DEFAULT_BATCH_ITEMS,
    HashedFile,
    Item,
    StrPath,
    batch_items,
    batch_request,
    chunks,
    hash_for_matching,
    hash_item,
    item_hashes,
    merge_results,
    resolve_pdq,
)
from hashmatch.client.results import FileResult, MatchResult
from hashmatch.v1 import hashes_pb2, match_pb2, match_pb2_grpc


class AsyncMatchClient:
    """asyncio client for MatchService. One per event loop; safe for concurrent tasks."""

    def __init__(self, connection: Connection | None = None) -> None:
        self.connection = connection or Connection.from_env()
        self._channel = self.connection.open_aio_channel()
        self._stub = match_pb2_grpc.MatchServiceStub(self._channel)

    async def match(
        self,
        hashes: Sequence[hashes_pb2.Hash],
        item_id: str = "",
        *,
        timeout: float | None = None,
    ) -> MatchResult:
        request = match_pb2.MatchRequest(item_id=item_id, hashes=hashes)
        metadata = self.connection.metadata()

        async def attempt(t: float | None) -> match_pb2.MatchResponse:
            response: match_pb2.MatchResponse = await self._stub.Match(
                request, timeout=t, metadata=metadata
            )
            return response

        return MatchResult.from_proto(await self.connection.ainvoke(attempt, timeout=timeout))

    async def match_batch(
        self, items: Iterable[Item], *, timeout: float | None = None
    ) -> list[MatchResult]:
        """Results in request order; a refused item has `error` set, the rest are answered."""
        request = batch_request(items)
        metadata = self.connection.metadata()

        async def attempt(t: float | None) -> match_pb2.MatchBatchResponse:
            response: match_pb2.MatchBatchResponse = await self._stub.MatchBatch(
                request, timeout=t, metadata=metadata
            )
            return response

        response = await self.connection.ainvoke(attempt, timeout=timeout)
        return [MatchResult.from_proto(r) for r in response.results]

    async def match_batch_stream(
        self, batches: Iterable[Sequence[Item]], *, timeout: float | None = None
    ) -> AsyncIterator[list[MatchResult]]:
        """See `MatchClient.match_batch_stream`: one list of results per batch, in order."""
        call = self._stub.MatchBatchStream(
            (batch_request(b) for b in batches),
            timeout=timeout,
            metadata=self.connection.metadata(),
        )
        try:
            async for response in call:
                if response.HasField("error"):
                    raise from_status(response.error)
                yield [MatchResult.from_proto(r) for r in response.results]
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def match_file(
        self,
        path: StrPath,
        *,
        item_id: str = "",
        dihedral: bool = False,
        pdq: bool | None = None,
        min_quality: int = 50,
        timeout: float | None = None,
        video_fps: float = 1.0,
    ) -> FileResult:
        """See `MatchClient.match_file`; the hashing runs in a worker thread."""
        hashed = await asyncio.to_thread(
            hash_item,
            path,
            dihedral=dihedral,
            pdq=pdq,
            min_quality=min_quality,
            video_fps=video_fps,
        )
        result = await self.match(item_hashes(hashed), item_id, timeout=timeout)
        return hashed.answered(result)

    async def match_files(
        self,
        paths: Iterable[StrPath],
        *,
        dihedral: bool = False,
        pdq: bool | None = None,
        min_quality: int = 50,
        batch_size: int = DEFAULT_BATCH_ITEMS,
        timeout: float | None = None,
        video_fps: float = 1.0,
    ) -> list[FileResult]:
        """See `MatchClient.match_files`; the hashing runs in a worker thread."""
        resolve_pdq(pdq, dihedral)  # before any hashing: PdqNotInstalled

        def hash_all() -> list[HashedFile]:
            return [
                hash_for_matching(
                    p, dihedral=dihedral, pdq=pdq, min_quality=min_quality, video_fps=video_fps
                )
                for p in paths
            ]

        files = await asyncio.to_thread(hash_all)
        out: list[FileResult] = []
        for chunk in chunks(files, batch_size):
            items = batch_items(chunk)
            answered = await self.match_batch(items, timeout=timeout) if items else []
            out += merge_results(chunk, answered)
        return out

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncMatchClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
