"""Client-side entry checks: every check the server makes on an entry is made on the client
first, reported by file line, and agrees with the server's (held to a real server here)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from conftest import Running
from hashmatch.client.algorithms import MD5, PDQ, SHA1, make_hash
from hashmatch.client.cli import main
from hashmatch.client.entrychecks import check_rows, is_degenerate_pdq
from hashmatch.client.errors import InvalidArgument
from hashmatch.client.list_client import Change
from hashmatch.client.listfile import BadRow, Row, parse_row
from hashmatch.server.core import is_degenerate_pdq as server_is_degenerate_pdq

MIN_QUALITY = 60


def pdq_with_bits(count: int, rng: random.Random) -> bytes:
    value = 0
    for bit in rng.sample(range(256), count):
        value |= 1 << bit
    return value.to_bytes(32, "big")


def test_degenerate_rule_is_the_cores_at_every_bit_count() -> None:
    rng = random.Random(16)
    for count in range(257):
        value = pdq_with_bits(count, rng)
        assert is_degenerate_pdq(value) == server_is_degenerate_pdq(value), count


def _case_rows(
    cases: list[tuple[str, int, bytes, str, int | None, bool]],
) -> list[Row | BadRow]:
    """One row per (name, algorithm, value, reference, quality, retire), lines 1, 2, ..."""
    return [
        parse_row(
            i,
            {MD5: "md5", SHA1: "sha1", PDQ: "pdq"}[alg],
            value.hex(),
            ref,
            "" if quality is None else str(quality),
            retire=retire,
        )
        for i, (_, alg, value, ref, quality, retire) in enumerate(cases, start=1)
    ]


def _server_refuses(running: Running, list_name: str, batch: str, rows: list[Row]) -> bool:
    changes = [
        Change(
            make_hash(r.algorithm, r.value, r.quality),
            None if r.retire else r.reference_id,
            r.labels,
        )
        for r in rows
    ]
    with running.lists() as client:
        try:
            client.apply_changes(list_name, batch, changes)
        except InvalidArgument:
            return True
    return False


def test_client_and_server_agree_on_edge_cases(running: Running) -> None:
    rng = random.Random(7)
    with running.lists() as client:
        client.create_list("edges", pdq_min_quality=MIN_QUALITY)
    md5 = rng.randbytes(16)
    single = [
        ("15 bits set", PDQ, pdq_with_bits(15, rng), "r", None, False),
        ("16 bits set", PDQ, pdq_with_bits(16, rng), "r", None, False),
        ("240 bits set", PDQ, pdq_with_bits(240, rng), "r", None, False),
        ("241 bits set", PDQ, pdq_with_bits(241, rng), "r", None, False),
        ("all zeros", PDQ, bytes(32), "r", None, False),
        ("all ones", PDQ, b"\xff" * 32, "r", None, False),
        ("degenerate with a good quality", PDQ, pdq_with_bits(3, rng), "r", 100, False),
        (
            "quality one below the minimum",
            PDQ,
            pdq_with_bits(128, rng),
            "r",
            MIN_QUALITY - 1,
            False,
        ),
        ("quality at the minimum", PDQ, pdq_with_bits(128, rng), "r", MIN_QUALITY, False),
        ("no quality", PDQ, pdq_with_bits(128, rng), "r", None, False),
        ("retiring a degenerate hash", PDQ, bytes(32), "", None, True),
        ("retiring with a low quality", PDQ, pdq_with_bits(128, rng), "", 1, True),
        ("a DEL in the reference", MD5, rng.randbytes(16), "a\x7fb", None, False),
        ("a unit separator in the reference", MD5, rng.randbytes(16), "a\x1fb", None, False),
        ("129-byte reference", MD5, rng.randbytes(16), "r" * 129, None, False),
        ("128-byte reference", MD5, rng.randbytes(16), "é" * 64, None, False),
    ]
    outcomes = []
    for n, case in enumerate(single):
        (row,) = _case_rows([case])
        client_refuses = isinstance(row, BadRow) or any(
            isinstance(r, BadRow) for r in check_rows([row], pdq_min_quality=MIN_QUALITY)
        )
        if isinstance(row, BadRow):
            # Rows the client cannot even build are sent as the server would see them.
            _, alg, value, ref, quality, retire = case
            row = Row(0, alg, value, ref, quality, retire)
        outcomes.append(
            (case[0], client_refuses, _server_refuses(running, "edges", f"s{n}", [row]))
        )
    assert [o for o in outcomes if o[1] != o[2]] == []
    # Both sides must have refused some and accepted some for the comparison to mean anything.
    assert {o[1] for o in outcomes} == {True, False}

    pdq = pdq_with_bits(100, rng)
    together = [
        (
            "the same hash twice",
            [("a", MD5, md5, "r1", None, False), ("b", MD5, md5, "r2", None, False)],
        ),
        (
            "upsert and retire",
            [("a", PDQ, pdq, "r1", None, False), ("b", PDQ, pdq, "", None, True)],
        ),
        (
            "same bytes, other algorithm",
            [("a", MD5, md5, "r1", None, False), ("b", SHA1, md5 + bytes(4), "r1", None, False)],
        ),
    ]
    for n, (name, cases) in enumerate(together):
        rows = _case_rows(cases)
        assert all(isinstance(r, Row) for r in rows)
        client_refuses = any(isinstance(r, BadRow) for r in check_rows(rows))
        server = _server_refuses(running, "edges", f"t{n}", [r for r in rows if isinstance(r, Row)])
        assert client_refuses == server, name


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "list.csv"
    path.write_text(text)
    return path


def test_duplicates_name_both_lines() -> None:
    rows = _case_rows(
        [
            ("a", MD5, b"\x01" * 16, "r1", None, False),
            ("b", SHA1, b"\x01" * 20, "r1", None, False),
            ("c", MD5, b"\x01" * 16, "r2", None, False),
            ("d", MD5, b"\x01" * 16, "r3", None, True),
        ]
    )
    bad = [r for r in check_rows(rows) if isinstance(r, BadRow)]
    assert [(b.line, b.problem) for b in bad] == [
        (3, "repeats the md5 hash of line 1"),
        (4, "repeats the md5 hash of line 1"),
    ]


def _cli(running: Running, *args: str) -> int:
    return main(["--server", running.address, "--token", running.tokens["hotline-a"], *args])


def test_push_refuses_a_file_the_server_would_refuse_naming_each_line(
    running: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(3)
    with running.lists() as client:
        client.create_list("checked", pdq_min_quality=MIN_QUALITY)
    good = pdq_with_bits(128, rng).hex()
    lines = [
        f"md5,{'ab' * 16},ref-1",  # 1
        f"pdq,{'00' * 32},ref-2",  # 2: degenerate
        f"pdq,{good},ref-3,{MIN_QUALITY - 1}",  # 3: below the list's minimum
        f"md5,{'ab' * 16},ref-4",  # 4: repeats line 1
        f"pdq,{pdq_with_bits(128, rng).hex()},ref-5,{MIN_QUALITY}",  # 5: fine
    ]
    path = _write(tmp_path, "\n".join(lines) + "\n")
    capsys.readouterr()
    assert _cli(running, "push", "checked", str(path)) == 1
    err = capsys.readouterr().err
    assert f"{path}:2: degenerate PDQ hash" in err
    assert (
        f"{path}:3: PDQ quality {MIN_QUALITY - 1} is below the list's minimum {MIN_QUALITY}" in err
    )
    assert f"{path}:4: repeats the md5 hash of line 1" in err
    assert f"{path}:1:" not in err and f"{path}:5:" not in err
    assert "3 bad row(s); nothing was sent" in err
    assert _cli(running, "apply", "checked", str(path), "--batch-id", "b1") == 1
    with running.lists() as client:
        info = client.get_list("checked")
    assert info.version == 0 and sum(info.counts.values()) == 0


def test_push_shows_the_first_20_bad_lines_and_the_count(
    running: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running.lists() as client:
        client.create_list("many")
    lines = [f"md5,{i:032x},ref-{i}" for i in range(5)] + [
        f"pdq,{'00' * 32},z-{i}" for i in range(30)
    ]
    path = _write(tmp_path, "\n".join(lines) + "\n")
    capsys.readouterr()
    assert _cli(running, "push", "many", str(path)) == 1
    err = capsys.readouterr().err
    shown = [line for line in err.splitlines() if line.startswith(f"{path}:")]
    assert len(shown) == 20
    assert shown[0].startswith(f"{path}:6:") and shown[-1].startswith(f"{path}:25:")
    assert "30 bad row(s) (the first 20 shown); nothing was sent" in err
    with running.lists() as client:
        assert client.get_list("many").version == 0


def test_a_retiring_push_is_not_held_to_quality(
    running: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running.lists() as client:
        client.create_list("retiring", pdq_min_quality=MIN_QUALITY)
    path = _write(tmp_path, f"pdq,{'00' * 32},ref-1\n")
    assert _cli(running, "push", "retiring", str(path), "--retire") == 0


def test_client_and_server_agree_on_labels(running: Running) -> None:
    rng = random.Random(11)
    with running.lists() as client:
        client.create_list("labelled")

    def row(line: int, ref: str, labels: dict[str, str]) -> Row | BadRow:
        return parse_row(line, "md5", rng.randbytes(16).hex(), ref, "", labels=labels)

    single = {
        "64 bytes": {"category": "x" * 64},
        "65 bytes": {"category": "x" * 65},
        "a C1 control character": {"classification": "A\x851"},
        "an unknown key": {"colour": "red"},
        "every key": {
            "category": "A",
            "age_band": "0-10",
            "classification": "A1",
            "baseline": "yes",
            "source": "hotline",
        },
    }
    for n, (name, labels) in enumerate(single.items()):
        built = row(1, f"ref-{n}", labels)
        client_refuses = isinstance(built, BadRow)
        sent = (
            Row(1, MD5, rng.randbytes(16), f"ref-{n}", labels=labels) if client_refuses else built
        )
        assert isinstance(sent, Row)
        assert client_refuses == _server_refuses(running, "labelled", f"l{n}", [sent]), name

    together = {
        "same labels": ({"category": "A"}, {"category": "A"}),
        "other labels": ({"category": "A"}, {"category": "B"}),
        "labelled and not": ({"category": "A"}, {}),
    }
    for n, (name, (first, second)) in enumerate(together.items()):
        rows = [row(1, f"pair-{n}", first), row(2, f"pair-{n}", second)]
        assert all(isinstance(r, Row) for r in rows)
        checked = list(check_rows(rows))
        client_refuses = any(isinstance(r, BadRow) for r in checked)
        server = _server_refuses(
            running, "labelled", f"p{n}", [r for r in rows if isinstance(r, Row)]
        )
        assert client_refuses == server, name
        if client_refuses:
            assert [(r.line, r.problem) for r in checked if isinstance(r, BadRow)] == [
                (2, "labels differ from those of line 1, which has the same reference ID")
            ]
