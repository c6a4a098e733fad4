"""Hash algorithms as users name them, and the digest length each one has."""

from __future__ import annotations

from collections.abc import Iterable

from hashmatch.v1 import hashes_pb2

MD5 = hashes_pb2.ALGORITHM_MD5
SHA1 = hashes_pb2.ALGORITHM_SHA1
SHA256 = hashes_pb2.ALGORITHM_SHA256
PDQ = hashes_pb2.ALGORITHM_PDQ
# One frame of a listed video (a list entry); a query carries the whole video as frames.
VPDQ = hashes_pb2.ALGORITHM_VPDQ

DIGEST_LENGTHS: dict[int, int] = {MD5: 16, SHA1: 20, SHA256: 32, PDQ: 32, VPDQ: 32}

_BY_NAME: dict[str, int] = {
    "md5": MD5,
    "sha1": SHA1,
    "sha-1": SHA1,
    "sha256": SHA256,
    "sha-256": SHA256,
    "pdq": PDQ,
    "vpdq": VPDQ,
}

NAMES: dict[int, str] = {MD5: "md5", SHA1: "sha1", SHA256: "sha256", PDQ: "pdq", VPDQ: "vpdq"}


def parse_algorithm(name: str) -> int:
    """Maps a name such as "sha256" or "SHA-256" to the proto enum value."""
    try:
        return _BY_NAME[name.strip().lower()]
    except KeyError:
        known = ", ".join(sorted(set(NAMES.values())))
        raise ValueError(f"unknown algorithm {name!r} (known: {known})") from None


def parse_hex_digest(algorithm: int, text: str) -> bytes:
    """Decodes a hex digest and checks its length against the algorithm."""
    try:
        value = bytes.fromhex(text.strip())
    except ValueError:
        raise ValueError("hash is not valid hex") from None
    expected = DIGEST_LENGTHS[algorithm]
    if len(value) != expected:
        raise ValueError(
            f"{NAMES[algorithm]} hash must be {expected} bytes ({2 * expected} hex digits), "
            f"got {len(value)}"
        )
    return value


def make_video_hash(frames: Iterable[tuple[bytes, int, int]]) -> hashes_pb2.Hash:
    """A VPDQ query hash: one video as its frames, each (32-byte PDQ, quality, timestamp in
    milliseconds)."""
    return hashes_pb2.Hash(
        algorithm=VPDQ,
        frames=[
            hashes_pb2.VideoFrame(pdq=pdq, quality=quality, timestamp_ms=ms)
            for pdq, quality, ms in frames
        ],
    )


def make_hash(algorithm: int, value: bytes, quality: int | None = None) -> hashes_pb2.Hash:
    msg = hashes_pb2.Hash(algorithm=algorithm, value=value)  # type: ignore[arg-type]
    if quality is not None:
        msg.quality = quality
    return msg
