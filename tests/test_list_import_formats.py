"""Import formats hotlines have: ThreatExchange CSV and signal lines, NCMEC XML, StopNCII
JSON — read from the synthetic samples in tests/data/lists (and files written here), then
pushed to a real server."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Running
from hashmatch.client.algorithms import MD5, PDQ, SHA1, SHA256
from hashmatch.client.cli import main
from hashmatch.client.digest import ListDigest
from hashmatch.client.entrychecks import check_rows
from hashmatch.client.listfile import FORMATS, BadRow, Row, detect_format, read_rows

LISTS = Path(__file__).resolve().parent / "data" / "lists"

# The synthetic values of tests/data/lists (see its README).
MD5_1 = "a183d45f3d146da9be9ea48fd7d1a003"
MD5_2 = "bcc486e398c3745a03cd432dfc0bb27f"
MD5_3 = "f818afba313944012553b4e2fb20020a"
MD5_4 = "cfe1ce5de2d820e73857eef1850de4da"
SHA1_1 = "4be032606a39595035acd7855a2df91d10a4bdcb"
SHA256_2 = "beb7e4d40b3cdfe2ed6c5eeb4d7217b8012dc93eb1715f3e477c7799097bdf52"
SHA256_3 = "0d2fedc024a704f7cbc4d3b3b5fef391ddad18dd49873d07900a285e300cc46c"
PDQ_1 = "705ede601a4f52f3af17a37bf33cd17c7dcfb0ef4682b020312d50518ef57361"
PDQ_2 = "ce5299249a3ea1c1f8d3e31f77dec47261ed2088415572bdad4623567b35e5ef"
PDQ_3 = "3cc6cc6779061fd7eec79ce572e893d279651229e5cb579f9666dd66711e116a"

HELD = "(pdq, video_md5, photo_md5, md5, video_sha256, sha256)"
Plain = tuple[int, int, str, str, int | None, bool, dict[str, str]]


def _plain(rows: list[Row | BadRow]) -> list[Plain]:
    bad = [r for r in rows if isinstance(r, BadRow)]
    assert not bad, bad
    return [
        (r.line, r.algorithm, r.value.hex(), r.reference_id, r.quality, r.retire, r.labels)
        for r in rows
        if isinstance(r, Row)
    ]


def _bad(rows: list[Row | BadRow]) -> list[tuple[int, str]]:
    return [(r.line, r.problem) for r in rows if isinstance(r, BadRow)]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


TE_CSV_ROWS: list[Plain] = [
    (
        2,
        PDQ,
        PDQ_1,
        "Example Collab",
        None,
        False,
        {"source": "Example Collab"},
    ),
    (
        3,
        MD5,
        MD5_1,
        "Example Collab",
        None,
        False,
        {"source": "Example Collab"},
    ),
    (
        4,
        MD5,
        MD5_2,
        "Other Collab",
        None,
        False,
        {"source": "Other Collab"},
    ),
    (
        5,
        SHA256,
        SHA256_2,
        "Other Collab",
        None,
        False,
        {"source": "Other Collab"},
    ),
]
NCMEC_LABELS_1 = {"classification": "A1", "source": "Example Member"}
NCMEC_LABELS_2 = {"classification": "B2", "source": "Other Member"}
NCMEC_ROWS: list[Plain] = [
    (10, MD5, MD5_1, "example-image-1", None, False, NCMEC_LABELS_1),
    (11, SHA1, SHA1_1, "example-image-1", None, False, NCMEC_LABELS_1),
    (12, PDQ, PDQ_1, "example-image-1", 90, False, NCMEC_LABELS_1),
    (21, MD5, MD5_2, "example-image-2", None, True, {}),
    (32, MD5, MD5_3, "example-video-1", None, False, NCMEC_LABELS_2),
    (33, SHA256, SHA256_3, "example-video-1", None, False, NCMEC_LABELS_2),
]
STOPNCII = {"source": "stopncii"}


def _stopncii_rows(lines: tuple[int, int, int]) -> list[Plain]:
    return [
        (lines[0], PDQ, PDQ_2, "stopncii", None, False, STOPNCII),
        (lines[1], MD5, MD5_4, "stopncii", None, False, STOPNCII),
        (lines[2], PDQ, PDQ_3, "stopncii", None, True, {}),
    ]


SAMPLES: list[tuple[str, str, list[Plain]]] = [
    ("threatexchange.csv", "threatexchange-csv", TE_CSV_ROWS),
    (
        "threatexchange-signals.txt",
        "threatexchange-signals",
        [
            (line - 1, a, h, "threatexchange-signals", None, False, {})
            for line, a, h, *_ in TE_CSV_ROWS
        ],
    ),
    ("ncmec.xml", "ncmec-xml", NCMEC_ROWS),
    ("stopncii.json", "stopncii-json", _stopncii_rows((7, 15, 23))),
    ("stopncii-records.jsonl", "stopncii-json", _stopncii_rows((1, 2, 3))),
]


@pytest.mark.parametrize(("name", "fmt", "expected"), SAMPLES)
def test_each_sample_is_detected_and_read(name: str, fmt: str, expected: list[Plain]) -> None:
    path = LISTS / name
    assert detect_format(path) == fmt
    assert _plain(list(read_rows(path))) == _plain(list(read_rows(path, fmt))) == expected


def test_every_format_has_a_sample_or_a_test() -> None:
    named = {fmt for _, fmt, _ in SAMPLES} | {"csv", "tsv", "jsonl"}
    assert named == set(FORMATS)


def test_a_named_format_overrides_detection(tmp_path: Path) -> None:
    # Signal lines in a file whose first line does not look like one (a comment-free
    # export whose first type is one hashmatch does not hold) are read when named.
    path = _write(tmp_path, "collab.txt", f"vpdq somejson\npdq {PDQ_1}\n")
    assert detect_format(path) == "csv"
    rows = list(read_rows(path, "threatexchange-signals"))
    assert _bad(rows) == [(1, "signal type 'vpdq' is not one hashmatch holds " + HELD)]
    assert [r.reference_id for r in rows if isinstance(r, Row)] == ["collab"]
    with pytest.raises(ValueError, match="unknown list format 'xml'"):
        read_rows(path, "xml")


def test_threatexchange_csv_in_any_column_order_with_bom_and_crlf(tmp_path: Path) -> None:
    text = (
        "signal_type,signal_str,collab,category,tags\r\n"
        f"pdq,{PDQ_1},Example Collab,TRUE_POSITIVE,\r\n"
        f"video_md5,{MD5_1.upper()},Example Collab,TRUE_POSITIVE,a b\r\n"
    )
    path = tmp_path / "te.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert detect_format(path) == "threatexchange-csv"
    assert _plain(list(read_rows(path))) == TE_CSV_ROWS[:2]


def test_threatexchange_rows_that_cannot_be_listed_are_named(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "te.csv",
        "collab,signal_type,signal_str,category,tags\n"
        f"C,pdq,{PDQ_1},TRUE_POSITIVE,\n"
        "C,video_tmk_pdqf,0123,TRUE_POSITIVE,\n"
        f"C,video_md5,{MD5_1},FALSE_POSITIVE,\n"
        f",video_md5,{MD5_2},TRUE_POSITIVE,\n"
        f"C,pdq,{PDQ_1[:-2]},TRUE_POSITIVE,\n"
        "C,pdq\n",
    )
    bad = _bad(list(read_rows(path)))
    assert [line for line, _ in bad] == [3, 4, 5, 6, 7]
    assert "video_tmk_pdqf" in bad[0][1] and "not one hashmatch holds" in bad[0][1]
    assert "FALSE_POSITIVE" in bad[1][1]
    assert "collab is empty" in bad[2][1]
    assert "pdq hash must be 32 bytes" in bad[3][1]
    assert "expected 5 fields" in bad[4][1]
    signals = _write(
        tmp_path, "s.txt", f"pdq {PDQ_1}\nurl https://example.com\npdq {PDQ_2} extra\n"
    )
    assert [line for line, _ in _bad(list(read_rows(signals)))] == [2, 3]


NCMEC_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'


@pytest.mark.parametrize(
    ("body", "line", "problem"),
    [
        (
            # A billion-laughs bomb: refused at its DOCTYPE, before any entity is expanded.
            '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>\n'
            "<queryResult><image><id>&lol2;</id></image></queryResult>\n",
            2,
            "a DOCTYPE is not accepted",
        ),
        (
            '<!DOCTYPE r SYSTEM "file:///etc/passwd">\n<queryResult/>\n',
            2,
            "a DOCTYPE is not accepted",
        ),
        (
            "<queryResult>\n<image><fingerprints><md5>"
            + MD5_1
            + "</md5></fingerprints></image>\n</queryResult>\n",
            3,
            "has no <id>",
        ),
        (
            "<queryResult>\n<deletedImage><id>gone-1</id></deletedImage>\n</queryResult>\n",
            3,
            "entry 'gone-1' names no fingerprints: hashmatch retires hashes, not entry IDs",
        ),
        (
            "<queryResult>\n<image><id>p-1</id><fingerprints><pdna>x</pdna></fingerprints></image>\n</queryResult>\n",
            3,
            "entry 'p-1' has no md5, sha1, sha256 or pdq fingerprint (it has: pdna)",
        ),
        ("<queryResult>\n<image><id>x</id>\n</queryResult>\n", 4, "not well-formed XML"),
        (
            "<queryResult>\n<image><id>x</id>\n<video><id>y</id></video></image>\n</queryResult>\n",
            4,
            "<video> inside <image>",
        ),
        (
            "<queryResult>\n<image><id>a</id><id>b</id></image>\n</queryResult>\n",
            3,
            "<image> has two <id> elements",
        ),
    ],
)
def test_ncmec_xml_refusals_name_their_line(
    tmp_path: Path, body: str, line: int, problem: str
) -> None:
    path = _write(tmp_path, "n.xml", NCMEC_HEAD + body)
    assert detect_format(path) == "ncmec-xml"
    rows = list(read_rows(path))
    bad = _bad(rows)
    assert len(bad) == 1 and bad[0][0] == line and problem in bad[0][1], bad
    assert not any(isinstance(r, Row) for r in rows)


def test_ncmec_xml_on_one_line_with_prefixes_and_a_repeated_hash(tmp_path: Path) -> None:
    text = (
        '<n:queryResult xmlns:n="urn:example"><n:images><n:image><n:id>i-1</n:id>'
        f"<n:fingerprints><n:md5>{MD5_1}</n:md5></n:fingerprints></n:image>"
        f"<n:image><n:id>i-2</n:id><n:fingerprints><n:md5>{MD5_1}</n:md5>"
        "</n:fingerprints></n:image></n:images></n:queryResult>"
    )
    path = _write(tmp_path, "one-line.xml", text)
    rows = list(read_rows(path))
    assert [(r.reference_id, r.value.hex()) for r in rows if isinstance(r, Row)] == [
        ("i-1", MD5_1),
        ("i-2", MD5_1),
    ]
    assert _bad(list(check_rows(rows))) == [(1, "repeats the md5 hash of line 1")]


def test_stopncii_unknown_signal_types_and_statuses_are_named_by_line(tmp_path: Path) -> None:
    text = (
        '{"count": 3, "hashRecords": [\n'
        f'  {{"signalType": "ImagePDQ", "hashValue": "{PDQ_2}", "hashStatus": "Active"}},\n'
        '  {"signalType": "VideoTMK", "hashValue": "00", "hashStatus": "Active"},\n'
        f'  {{"signalType": "VideoMD5", "hashValue": "{MD5_4}", "hashStatus": "Paused"}},\n'
        '  {"signalType": "ImagePDQ"},\n'
        "  [1, 2]\n"
        '], "hasMoreRecords": false}\n'
    )
    path = _write(tmp_path, "s.json", text)
    rows = list(read_rows(path))
    assert [r.line for r in rows if isinstance(r, Row)] == [2]
    bad = _bad(rows)
    assert [line for line, _ in bad] == [3, 4, 5, 6]
    assert "signalType 'VideoTMK' is not one hashmatch holds (ImagePDQ, VideoMD5)" in bad[0][1]
    assert "hashStatus 'Paused' is not known" in bad[1][1]
    assert "hashValue is missing" in bad[2][1]
    assert "must be a JSON object" in bad[3][1]


def test_stopncii_array_and_broken_documents(tmp_path: Path) -> None:
    array = _write(
        tmp_path,
        "a.json",
        f'[\n{{"signalType": "VideoMD5", "hashValue": "{MD5_4}"}},\n\n'
        f'{{"signalType": "ImagePDQ", "hashValue": "{PDQ_2}", "hashStatus": "Deleted"}}]\n',
    )
    assert detect_format(array) == "stopncii-json"
    assert [(r.line, r.retire) for r in read_rows(array) if isinstance(r, Row)] == [
        (2, False),
        (4, True),
    ]
    broken = _write(tmp_path, "b.json", '{"hashRecords": [\n{"signalType": "VideoMD5",\n')
    bad = _bad(list(read_rows(broken)))
    assert len(bad) == 1 and bad[0][1].startswith("not valid JSON")
    empty = _write(tmp_path, "c.json", '{"count": 0}\n')
    # One object on one line without signalType is hashmatch's JSON lines unless named.
    assert "no hashRecords" in _bad(list(read_rows(empty, "stopncii-json")))[0][1]


def _cli(running: Running, *args: str) -> int:
    return main(["--server", running.address, "--token", running.tokens["hotline-a"], *args])


_ALGORITHM_NAMES = {MD5: "md5", SHA1: "sha1", SHA256: "sha256", PDQ: "pdq"}


@pytest.mark.parametrize("command", [["push"], ["apply", "--batch-id", "one"]])
@pytest.mark.parametrize(("name", "fmt", "expected"), SAMPLES)
def test_each_sample_is_applied_by_a_real_server(
    running: Running,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    fmt: str,
    expected: list[Plain],
    command: list[str],
) -> None:
    """Entries, retirements and labels arrive: the list's digest (which covers labels)
    is that of the file's upserts, and what the file retires is gone."""
    upserts = [r for r in expected if not r[5]]
    retirements = [r for r in expected if r[5]]
    with running.lists() as client:
        client.create_list("imported")
    if retirements:
        # What the file retires is listed first, so that the push has something to retire.
        seed = "".join(f"{_ALGORITHM_NAMES[a]},{h},seeded\n" for _, a, h, *_ in retirements)
        seed_path = _write(tmp_path, "seed.csv", seed)
        assert _cli(running, "apply", "imported", str(seed_path), "--batch-id", "seed") == 0
    capsys.readouterr()
    code = _cli(running, command[0], "imported", str(LISTS / name), *command[1:], "--format", fmt)
    err = capsys.readouterr().err
    assert code == 0, err
    with running.lists() as client:
        info = client.get_list("imported")
    expected_digest = ListDigest()
    for _, a, h, ref, _, _, labels in upserts:
        expected_digest.add(a, bytes.fromhex(h), ref, labels)
    assert info.digest == expected_digest.hex()
    assert sum(info.counts.values()) == len(upserts)


def test_label_columns_and_json_lines_labels(tmp_path: Path) -> None:
    wide = _write(
        tmp_path,
        "iwf.csv",
        f"MD5,SHA1,Category,Age Band,Notes,ID\n{MD5_1},{SHA1_1},A,0-2,free text,ref-1\n"
        f"{MD5_2},,B,,,ref-2\n",
    )
    assert [(r.reference_id, r.labels) for r in read_rows(wide) if isinstance(r, Row)] == [
        ("ref-1", {"category": "A", "age_band": "0-2"}),
        ("ref-1", {"category": "A", "age_band": "0-2"}),
        ("ref-2", {"category": "B"}),
    ]
    too_long = _write(tmp_path, "long.csv", f"ID,MD5,Source\nref-1,{MD5_1},{'s' * 65}\n")
    assert _bad(list(read_rows(too_long))) == [
        (2, "label source: must be 1-64 bytes of UTF-8, got 65")
    ]
    lines = _write(
        tmp_path,
        "l.jsonl",
        f'{{"algorithm": "md5", "hash": "{MD5_1}", "reference_id": "r", '
        '"labels": {"baseline": "yes"}}\n'
        f'{{"algorithm": "md5", "hash": "{MD5_2}", "retire": true}}\n'
        f'{{"algorithm": "md5", "hash": "{MD5_3}", "reference_id": "r", "labels": ["x"]}}\n'
        f'{{"algorithm": "md5", "hash": "{MD5_4}", "reference_id": "r", "retire": "no"}}\n',
    )
    rows = list(read_rows(lines))
    assert [(r.labels, r.retire) for r in rows if isinstance(r, Row)] == [
        ({"baseline": "yes"}, False),
        ({}, True),
    ]
    assert [line for line, _ in _bad(rows)] == [3, 4]
