"""Request decoding that turns undecodable bytes into a field-level error.

protobuf refuses a string field holding malformed UTF-8 by failing the whole parse, which
grpcio would answer with a bare INTERNAL. The service instead decodes leniently and, on
failure, walks the wire format to name the offending field for INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request that did not parse; the handler refuses it."""

    field: str
    description: str


def lenient_deserializer(cls: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    def deserialize(raw: bytes) -> Message | Undecodable:
        try:
            return cls.FromString(raw)
        except DecodeError:
            found = find_bad_utf8(cls.DESCRIPTOR, raw)
            if found is not None:
                return Undecodable(found, "is not valid UTF-8")
            return Undecodable("", "the request is not a valid protobuf message")

    return deserialize


def find_bad_utf8(descriptor: Descriptor, raw: bytes, prefix: str = "") -> str | None:
    """The path (e.g. "items[2].item_id") of the first string field that is not UTF-8."""
    counts: dict[int, int] = {}
    pos = 0
    try:
        while pos < len(raw):
            key, pos = _varint(raw, pos)
            number, wire_type = key >> 3, key & 7
            if wire_type == _VARINT:
                _, pos = _varint(raw, pos)
                continue
            if wire_type in (_I64, _I32):
                pos += 8 if wire_type == _I64 else 4
                continue
            if wire_type != _LEN:
                return None
            size, pos = _varint(raw, pos)
            body = raw[pos : pos + size]
            pos += size
            fd = descriptor.fields_by_number.get(number)
            if fd is None:
                continue
            index = counts.get(number, 0)
            counts[number] = index + 1
            path = prefix + fd.name
            if fd.is_repeated:
                path += f"[{index}]"
            if fd.type == FieldDescriptor.TYPE_STRING:
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError:
                    return path
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                inner = find_bad_utf8(fd.message_type, body, path + ".")
                if inner is not None:
                    return inner
    except IndexError:
        return None
    return None


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = raw[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
