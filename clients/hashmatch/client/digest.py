"""The order-independent list digest, computed the same way the server does.

A hotline computes it over its own list file and compares it with GetList's `digest` to
prove the service holds exactly that list, without exchanging the list.
"""

from __future__ import annotations

from collections.abc import Mapping

import xxhash

from hashmatch.client.labels import stored_labels

_MOD = 1 << 128


def entry_term(
    algorithm: int, value: bytes, reference_id: str, labels: Mapping[str, str] | None = None
) -> int:
    """One entry's contribution: XXH3-128 of (algorithm byte, raw hash, UTF-8 reference,
    then its labels as `labels.stored_labels` writes them: nothing when it has none)."""
    data = bytes((algorithm,)) + value + reference_id.encode("utf-8")
    if labels:
        data += stored_labels(labels)
    return xxhash.xxh3_128_intdigest(data)


class ListDigest:
    """Sum modulo 2^128 of the entry terms: adding and removing entries commute."""

    def __init__(self, value: int = 0) -> None:
        self.value = value % _MOD

    @classmethod
    def from_bytes(cls, raw: bytes) -> ListDigest:
        return cls(int.from_bytes(raw, "big")) if raw else cls()

    def add(
        self,
        algorithm: int,
        value: bytes,
        reference_id: str,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.add_term(entry_term(algorithm, value, reference_id, labels))

    def remove(
        self,
        algorithm: int,
        value: bytes,
        reference_id: str,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.remove_term(entry_term(algorithm, value, reference_id, labels))

    def add_term(self, term: int) -> None:
        self.value = (self.value + term) % _MOD

    def remove_term(self, term: int) -> None:
        self.value = (self.value - term) % _MOD

    def to_bytes(self) -> bytes:
        return self.value.to_bytes(16, "big")

    def hex(self) -> str:
        return self.to_bytes().hex()
