"""List file import formats: BOM/CRLF, header-named columns, one column per algorithm, TSV.

Every sample is synthetic, written by the test itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hashmatch.client.algorithms import MD5, PDQ, SHA1, SHA256
from hashmatch.client.cli import main
from hashmatch.client.listfile import BadRow, Row, read_rows

MD5_HEX = "0123456789abcdef0123456789abcdef"
SHA1_HEX = "00112233445566778899aabbccddeeff00112233"
SHA256_HEX = "ab" * 32
PDQ_HEX = "cd" * 32


def _write(tmp_path: Path, name: str, text: str, *, bom: bool = False, crlf: bool = False) -> Path:
    if crlf:
        text = text.replace("\n", "\r\n")
    data = text.encode("utf-8")
    if bom:
        data = b"\xef\xbb\xbf" + data
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _rows(path: Path) -> list[Row]:
    out = list(read_rows(path))
    bad = [r for r in out if isinstance(r, BadRow)]
    assert not bad, bad
    return [r for r in out if isinstance(r, Row)]


def _bad(path: Path) -> list[BadRow]:
    return [r for r in read_rows(path) if isinstance(r, BadRow)]


def _plain(rows: list[Row]) -> list[tuple[int, str, str, int | None]]:
    return [(r.algorithm, r.value.hex(), r.reference_id, r.quality) for r in rows]


EXPECTED = [
    (MD5, MD5_HEX, "ref-1", None),
    (PDQ, PDQ_HEX, "ref-2", 90),
]

LEGACY = f"algorithm,hash_hex,reference_id,quality\nmd5,{MD5_HEX},ref-1,\npdq,{PDQ_HEX},ref-2,90\n"


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("crlf", [False, True])
def test_csv_tolerates_bom_and_crlf(tmp_path: Path, bom: bool, crlf: bool) -> None:
    path = _write(tmp_path, "list.csv", LEGACY, bom=bom, crlf=crlf)
    assert _plain(_rows(path)) == EXPECTED
    # Without a header row too: the BOM must not stick to the first algorithm name.
    headless = LEGACY.split("\n", 1)[1]
    path = _write(tmp_path, "headless.csv", headless, bom=bom, crlf=crlf)
    rows = _rows(path)
    assert _plain(rows) == EXPECTED
    assert [r.line for r in rows] == [1, 2]


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("crlf", [False, True])
def test_json_lines_tolerate_bom_and_crlf(tmp_path: Path, bom: bool, crlf: bool) -> None:
    text = (
        f'{{"algorithm": "md5", "hash": "{MD5_HEX}", "reference_id": "ref-1"}}\n'
        f'{{"algorithm": "pdq", "hash": "{PDQ_HEX}", "reference_id": "ref-2", "quality": 90}}\n'
    )
    path = _write(tmp_path, "list.jsonl", text, bom=bom, crlf=crlf)
    assert _plain(_rows(path)) == EXPECTED


@pytest.mark.parametrize(
    "header",
    [
        "reference_id,quality,hash,algorithm",
        "Ref,Hash,Algorithm,Quality",
        "ID,Quality,Hash_Hex,ALGORITHM",
        "Reference ID,Algorithm,Hash,Quality",
        "reference,algorithm,hash,quality",
    ],
)
def test_header_named_csv_in_any_column_order(tmp_path: Path, header: str) -> None:
    names = [h.strip().lower() for h in header.split(",")]
    values = {
        "ref": ["ref-1", "ref-2"],
        "alg": ["md5", "pdq"],
        "hash": [MD5_HEX, PDQ_HEX],
        "quality": ["", "90"],
    }

    def key(name: str) -> str:
        if "alg" in name:
            return "alg"
        if "hash" in name:
            return "hash"
        if "quality" in name:
            return "quality"
        return "ref"

    lines = [header] + [",".join(values[key(n)][i] for n in names) for i in range(2)]
    path = _write(tmp_path, "named.csv", "\n".join(lines) + "\n", bom=True, crlf=True)
    rows = _rows(path)
    assert _plain(rows) == EXPECTED
    assert [r.line for r in rows] == [2, 3]


def test_header_named_csv_without_quality_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "named.csv", f"hash,id,algorithm\n{MD5_HEX},ref-1,md5\n")
    assert _plain(_rows(path)) == [(MD5, MD5_HEX, "ref-1", None)]


def test_one_column_per_algorithm(tmp_path: Path) -> None:
    text = (
        "MD5,SHA1,SHA256,Category,ID\n"
        f"{MD5_HEX},{SHA1_HEX},{SHA256_HEX},A1,item-1\n"
        f"{MD5_HEX},,,B2,item-2\n"
        f",,{SHA256_HEX},,item-3\n"
    )
    path = _write(tmp_path, "wide.csv", text, bom=True, crlf=True)
    rows = _rows(path)
    assert _plain(rows) == [
        (MD5, MD5_HEX, "item-1", None),
        (SHA1, SHA1_HEX, "item-1", None),
        (SHA256, SHA256_HEX, "item-1", None),
        (MD5, MD5_HEX, "item-2", None),
        (SHA256, SHA256_HEX, "item-3", None),
    ]
    assert [r.line for r in rows] == [2, 2, 2, 3, 4]


def test_one_column_per_algorithm_with_pdq_quality(tmp_path: Path) -> None:
    text = f"reference_id,pdq,PDQ_Quality,md5\nitem-1,{PDQ_HEX},80,{MD5_HEX}\nitem-2,{PDQ_HEX},,\n"
    path = _write(tmp_path, "wide.csv", text)
    assert _plain(_rows(path)) == [
        (PDQ, PDQ_HEX, "item-1", 80),
        (MD5, MD5_HEX, "item-1", None),
        (PDQ, PDQ_HEX, "item-2", None),
    ]
    plain_quality = _write(tmp_path, "q.csv", f"ref,pdq,quality\nitem-1,{PDQ_HEX},70\n")
    assert _plain(_rows(plain_quality)) == [(PDQ, PDQ_HEX, "item-1", 70)]


@pytest.mark.parametrize("crlf", [False, True])
def test_tab_separated_files(tmp_path: Path, crlf: bool) -> None:
    legacy = f"md5\t{MD5_HEX}\tref-1\npdq\t{PDQ_HEX}\tref-2\t90\n"
    assert _plain(_rows(_write(tmp_path, "a.txt", legacy, bom=True, crlf=crlf))) == EXPECTED
    named = f"Quality\tRef\tHash\tAlgorithm\n\tref-1\t{MD5_HEX}\tmd5\n90\tref-2\t{PDQ_HEX}\tpdq\n"
    assert _plain(_rows(_write(tmp_path, "b.tsv", named, crlf=crlf))) == EXPECTED
    wide = (
        f"ID\tMD5\tPDQ\tPDQ_Quality\tCategory\nref-1\t{MD5_HEX}\t\t\tX\nref-2\t\t{PDQ_HEX}\t90\tY\n"
    )
    assert _plain(_rows(_write(tmp_path, "c.csv", wide, bom=True, crlf=crlf))) == EXPECTED


def test_every_layout_gives_the_same_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [
        _write(tmp_path, "legacy.csv", LEGACY),
        _write(
            tmp_path,
            "named.csv",
            f"Ref,Quality,Hash,Algorithm\nref-1,,{MD5_HEX},md5\nref-2,90,{PDQ_HEX},pdq\n",
            bom=True,
            crlf=True,
        ),
        _write(
            tmp_path,
            "wide.tsv",
            f"ID\tMD5\tPDQ\tPDQ_Quality\nref-1\t{MD5_HEX}\t\t\nref-2\t\t{PDQ_HEX}\t90\n",
            bom=True,
        ),
    ]
    digests = set()
    for path in files:
        assert main(["digest", str(path)]) == 0
        digests.add(capsys.readouterr().out.strip())
    assert len(digests) == 1


def test_bad_rows_keep_naming_file_lines(tmp_path: Path) -> None:
    wide = _write(
        tmp_path,
        "wide.csv",
        f"MD5,SHA1,Category,ID\n{MD5_HEX},,A,item-1\nnothex,,B,item-2\n,,C,item-3\n"
        f"{MD5_HEX},{SHA1_HEX},D,\n",
        bom=True,
        crlf=True,
    )
    assert [b.line for b in _bad(wide)] == [3, 4, 5]
    named = _write(
        tmp_path,
        "named.csv",
        f"id,hash,algorithm\nref-1,{MD5_HEX},md5\nref-2,{MD5_HEX},crc32\nref-3,{MD5_HEX}\n",
    )
    bad = _bad(named)
    assert [b.line for b in bad] == [3, 4]
    assert "unknown algorithm" in bad[0].problem
    assert "fields" in bad[1].problem
    tsv = _write(tmp_path, "bad.tsv", f"md5\t{MD5_HEX}\tref-1\nmd5\t{MD5_HEX[:-2]}\tref-2\n")
    assert [b.line for b in _bad(tsv)] == [2]
    # Quality on a wide row without a PDQ hash is refused, not dropped.
    q = _write(tmp_path, "q.csv", f"id,md5,pdq,pdq_quality\nref-1,{MD5_HEX},,90\n")
    assert [b.line for b in _bad(q)] == [2]


@pytest.mark.parametrize(
    "header",
    [
        "MD5,SHA1,Category",  # no reference column
        "md5,sha1,Category",  # lower-case names like data, still no reference column
        "id,reference_id,md5",  # two reference columns
        "id,md5,MD5",  # the same algorithm twice
    ],
)
def test_headers_that_cannot_be_read_are_refused_on_line_one(tmp_path: Path, header: str) -> None:
    path = _write(tmp_path, "h.csv", f"{header}\n{MD5_HEX},{MD5_HEX},x\n")
    bad = _bad(path)
    assert bad and bad[0].line == 1


def test_an_older_header_starting_with_algorithm_stays_positional(tmp_path: Path) -> None:
    path = _write(tmp_path, "old.csv", f"Algorithm,digest in hex,source,q\nmd5,{MD5_HEX},ref-1,\n")
    assert _plain(_rows(path)) == [(MD5, MD5_HEX, "ref-1", None)]


def test_a_header_with_quality_still_allows_rows_without_it(tmp_path: Path) -> None:
    text = f"algorithm,hash_hex,reference_id,quality\nmd5,{MD5_HEX},ref-1\npdq,{PDQ_HEX},ref-2,90\n"
    assert _plain(_rows(_write(tmp_path, "l.csv", text))) == EXPECTED
    wide = f"ID,MD5,Category\nref-1,{MD5_HEX}\n"
    assert _plain(_rows(_write(tmp_path, "w.csv", wide))) == [(MD5, MD5_HEX, "ref-1", None)]
    cut = f"ID,MD5,SHA1\nref-1,{MD5_HEX}\n"
    assert [b.line for b in _bad(_write(tmp_path, "c.csv", cut))] == [2]


def test_cli_reports_bad_lines_of_a_wide_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "wide.csv", f"ID,MD5\nitem-1,{MD5_HEX}\nitem-2,zz\n", bom=True)
    assert main(["digest", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:3:" in err
    assert "nothing was sent" in err
