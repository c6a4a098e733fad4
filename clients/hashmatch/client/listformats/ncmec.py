"""NCMEC hash-sharing XML, read as a stream with the DTD refused.

NCMEC's schema is not public; what is read is written down in the README ("NCMEC XML").
An entry is an `image` or `video` element (at any depth, namespace prefixes ignored) whose
children `id`, `classification` and `member` give the reference ID and the
`classification` and `source` labels, and whose `fingerprints` children `md5`, `sha1`,
`sha256` and `pdq` (optional attribute `quality`) each become an entry with that reference.
`deletedImage`/`deletedVideo` entries retire the hashes their fingerprints name. Other
fingerprints (pdna, tmk-pdqf, videntifier…) are not hashes hashmatch holds: an entry with
none of the four is reported on its line, as is a deletion that names no fingerprints
(hashmatch retires hashes, not entry IDs). Other elements are ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

from hashmatch.client.listformats.rows import BadRow, Row, parse_row

_ENTRIES = {"image": False, "video": False, "deletedImage": True, "deletedVideo": True}
_FIELDS = ("id", "classification", "member")
_HELD = ("md5", "sha1", "sha256", "pdq")
_CHUNK = 1 << 16


class _Refused(Exception):
    """A construct the reader does not accept (a DTD, an entity), at a line."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.problem = problem


@dataclass
class _Fingerprint:
    line: int
    name: str
    quality: str
    text: list[str] = field(default_factory=list)


@dataclass
class _Entry:
    line: int
    tag: str
    retire: bool
    fields: dict[str, str] = field(default_factory=dict)
    fingerprints: list[_Fingerprint] = field(default_factory=list)


class _Reader:
    def __init__(self) -> None:
        self.parser = expat.ParserCreate()
        self.parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        self.parser.StartDoctypeDeclHandler = self._refuse_dtd
        self.parser.EntityDeclHandler = self._refuse_entity
        self.parser.UnparsedEntityDeclHandler = self._refuse_entity
        self.parser.ExternalEntityRefHandler = self._refuse_external
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.parser.CharacterDataHandler = self._text
        self.path: list[str] = []
        self.entry: _Entry | None = None
        self.capture: list[str] | None = None
        self.out: list[Row | BadRow] = []

    def _line(self) -> int:
        return int(self.parser.CurrentLineNumber)

    def _refuse_dtd(self, *_: object) -> None:
        raise _Refused(self._line(), "a DOCTYPE is not accepted in a list file")

    def _refuse_entity(self, *_: object) -> None:
        raise _Refused(self._line(), "entity declarations are not accepted in a list file")

    def _refuse_external(self, *_: object) -> int:
        raise _Refused(self._line(), "external entities are not accepted in a list file")

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        tag = name.rsplit(":", 1)[-1]
        parent = self.path[-1] if self.path else ""
        self.path.append(tag)
        if tag in _ENTRIES:
            if self.entry is not None:
                raise _Refused(self._line(), f"<{tag}> inside <{self.entry.tag}>")
            self.entry = _Entry(self._line(), tag, _ENTRIES[tag])
            return
        entry = self.entry
        if entry is None:
            return
        if parent == entry.tag and tag in _FIELDS:
            self.capture = []
        elif parent == "fingerprints" and len(self.path) >= 3 and self.path[-3] == entry.tag:
            fingerprint = _Fingerprint(self._line(), tag, attrs.get("quality", ""))
            entry.fingerprints.append(fingerprint)
            self.capture = fingerprint.text

    def _text(self, data: str) -> None:
        if self.capture is not None:
            self.capture.append(data)

    def _end(self, name: str) -> None:
        tag = self.path.pop()
        entry = self.entry
        if entry is None:
            return
        if tag == entry.tag:  # entries do not nest (refused at their start)
            self.out.extend(_rows(entry))
            self.entry = None
        elif self.capture is not None:
            if tag in _FIELDS and self.path and self.path[-1] == entry.tag:
                if tag in entry.fields:
                    raise _Refused(self._line(), f"<{entry.tag}> has two <{tag}> elements")
                entry.fields[tag] = "".join(self.capture).strip()
            self.capture = None


def _rows(entry: _Entry) -> Iterator[Row | BadRow]:
    reference_id = entry.fields.get("id", "")
    if not reference_id:
        yield BadRow(entry.line, f"<{entry.tag}> has no <id> (it is the reference ID)")
        return
    held = [f for f in entry.fingerprints if f.name in _HELD]
    if not held:
        if entry.retire:
            problem = "names no fingerprints: hashmatch retires hashes, not entry IDs"
        else:
            others = ", ".join(sorted({f.name for f in entry.fingerprints})) or "none"
            problem = f"has no md5, sha1, sha256 or pdq fingerprint (it has: {others})"
        yield BadRow(entry.line, f"entry {reference_id!r} {problem}")
        return
    labels = {
        "classification": entry.fields.get("classification", ""),
        "source": entry.fields.get("member", ""),
    }
    for f in held:
        yield parse_row(
            f.line,
            f.name,
            "".join(f.text),
            reference_id,
            f.quality,
            retire=entry.retire,
            labels={} if entry.retire else labels,
        )


def read_ncmec_xml(path: Path) -> Iterator[Row | BadRow]:
    reader = _Reader()
    with path.open("rb") as f:
        try:
            while chunk := f.read(_CHUNK):
                reader.parser.Parse(chunk, False)
                yield from reader.out
                reader.out.clear()
            reader.parser.Parse(b"", True)
        except _Refused as exc:
            yield from reader.out
            yield BadRow(exc.line, exc.problem)
            return
        except expat.ExpatError as exc:
            yield from reader.out
            yield BadRow(exc.lineno, f"not well-formed XML: {expat.ErrorString(exc.code)}")
            return
    yield from reader.out
