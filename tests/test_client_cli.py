"""`hashmatch-client` in-process against a real server: statistics, flood policy,
subscriptions, --json listings, --version, help texts, empty results, the default server."""

from __future__ import annotations

import importlib.metadata
import json
import random
from typing import Any

import pytest

from conftest import Running
from hashmatch.client import MD5, make_hash
from hashmatch.client.cli import main
from helpers import eventually, random_digest, upsert


class Cli:
    def __init__(self, running: Running, capsys: pytest.CaptureFixture[str]) -> None:
        self.running = running
        self.capsys = capsys

    def __call__(self, tenant: str, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        argv = ["--server", self.running.address, "--token", self.running.tokens[tenant]]
        code = main([*argv, *args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, tenant: str, *args: str) -> Any:
        code, out, err = self(tenant, *args, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(running: Running, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(running, capsys)


def test_stats_show_matches_per_reference(running: Running, cli: Cli) -> None:
    rng = random.Random(7)
    hot, cold = random_digest(rng, MD5), random_digest(rng, MD5)
    running.lists().create_list("iwf")
    assert cli("hotline-a", "stats", "iwf") == (0, "no matches recorded for iwf\n", "")
    assert cli.json("hotline-a", "stats", "iwf") == {"list": "iwf", "references": []}
    running.lists().apply_changes("iwf", "b1", [upsert(MD5, hot, "HOT"), upsert(MD5, cold, "C")])
    with running.matcher() as matcher:
        for _ in range(3):
            assert matcher.match([make_hash(MD5, hot)]).matched

    def counted() -> bool:
        doc = cli.json("hotline-a", "stats", "iwf")
        return [(r["reference_id"], r["matches"]) for r in doc["references"]] == [("HOT", 3)]

    eventually(counted, "the matches reached the statistics")
    doc = cli.json("hotline-a", "stats", "iwf", "--limit", "1")
    assert doc["references"][0]["last_matched_at"].endswith("+00:00")
    code, out, _ = cli("hotline-a", "stats", "iwf")
    assert code == 0 and out.startswith("HOT\t3 match(es)\tlast 20")
    # Another hotline's list is not visible.
    code, out, err = cli("hotline-b", "stats", "iwf")
    assert code == 2 and out == "" and err.startswith("hashmatch-client: ")


def test_flood_policy_shows_and_sets(running: Running, cli: Cli) -> None:
    running.lists().create_list("iwf")
    default = running.lists().flood_policy("iwf")
    assert default.factor > 0, "a new list has flood quarantine on"
    shown = cli.json("hotline-a", "flood-policy", "iwf")
    assert shown == {
        "list": "iwf",
        "factor": default.factor,
        "min_matches": default.min_matches,
        "window_seconds": default.window_seconds,
        "enabled": True,
    }
    code, out, _ = cli("hotline-a", "flood-policy", "iwf", "--min-matches", "80")
    assert code == 0
    assert out == (
        f"iwf\tflood quarantine on\tfactor={default.factor}\tmin_matches=80\t"
        f"window_seconds={default.window_seconds}\n"
    )
    assert running.lists().flood_policy("iwf").min_matches == 80
    off = cli.json("hotline-a", "flood-policy", "iwf", "--factor", "0")
    assert (off["factor"], off["enabled"]) == (0, False)
    assert cli("hotline-a", "flood-policy", "iwf")[1] == "iwf\tflood quarantine off\tfactor=0\n"
    code, _, err = cli("hotline-b", "flood-policy", "iwf", "--factor", "5")
    assert code == 2 and err
    assert running.lists().flood_policy("iwf").factor == 0


def test_subscriptions_show(running: Running, cli: Cli) -> None:
    running.lists().create_list("iwf")
    running.lists("hotline-b").create_list("ncmec")
    doc = cli.json("platform", "subscriptions")
    assert doc["all_lists"] is True and sorted(doc["available"]) == ["iwf", "ncmec"]
    assert cli("platform", "subscribe", "iwf")[0] == 0
    doc = cli.json("platform", "subscriptions")
    assert (doc["all_lists"], doc["lists"]) == (False, ["iwf"])
    code, out, _ = cli("platform", "subscriptions")
    assert code == 0 and out.startswith("subscribed to iwf (available: ")


def test_listings_take_json_and_say_when_empty(running: Running, cli: Cli) -> None:
    running.lists().create_list("iwf")
    assert cli("hotline-a", "feedback", "iwf") == (0, "no feedback for iwf\n", "")
    assert cli("hotline-a", "quarantine", "iwf") == (0, "nothing quarantined in iwf\n", "")
    assert cli("hotline-a", "grants", "iwf") == (0, "iwf is granted to no tenant\n", "")
    assert cli("platform", "allow", "show") == (0, "the allow-list is empty\n", "")
    assert cli("hotline-b", "lists") == (0, "no lists visible to this tenant\n", "")
    assert cli.json("hotline-a", "feedback", "iwf") == {"list": "iwf", "references": []}
    assert cli.json("hotline-a", "quarantine", "iwf") == {"list": "iwf", "references": []}
    assert cli.json("hotline-a", "grants", "iwf") == {"list": "iwf", "grants": []}
    assert cli.json("platform", "allow", "show") == {"hashes": []}
    assert cli.json("hotline-b", "lists") == {"lists": []}

    assert cli("hotline-a", "grant", "iwf", "hotline-b")[0] == 0
    grants = cli.json("hotline-a", "grants", "iwf")["grants"]
    assert [(g["tenant"], g["granted_by"]) for g in grants] == [("hotline-b", "hotline-a")]
    assert grants[0]["granted_at"].endswith("+00:00")
    [listed] = cli.json("hotline-b", "lists")["lists"]
    assert (listed["name"], listed["owner"], listed["version"]) == ("iwf", "hotline-a", 0)
    got = cli.json("hotline-a", "get-list", "iwf")
    assert got == listed and got["counts"]["md5"] == 0
    rng = random.Random(3)
    value = random_digest(rng, MD5)
    assert cli("platform", "allow", "add", "md5", value.hex())[0] == 0
    assert cli.json("platform", "allow", "show") == {
        "hashes": [{"algorithm": "md5", "hash": value.hex()}]
    }


def test_feedback_json_carries_reasons_and_notes(running: Running, cli: Cli) -> None:
    rng = random.Random(5)
    value = random_digest(rng, MD5)
    running.lists().create_list("iwf")
    running.lists().apply_changes("iwf", "b1", [upsert(MD5, value, "REF-1")])
    with running.matcher() as matcher:
        assert matcher.match([make_hash(MD5, value)]).matched

    def reported() -> bool:
        done = cli("platform", "report", "iwf", "REF-1", "--reason", "benign", "--note", "cat")
        return done[0] == 0

    eventually(reported, "the match reached the store")
    [ref] = cli.json("hotline-a", "feedback", "iwf")["references"]
    assert (ref["reference_id"], ref["total"], ref["reasons"]) == ("REF-1", 1, {"benign": 1})
    assert ref["notes"] == ["cat"] and ref["last_reported_at"].endswith("+00:00")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    expected = importlib.metadata.version("hashmatch-client")
    assert capsys.readouterr().out == f"hashmatch-client {expected}\n"


@pytest.mark.parametrize(
    ("command", "needles"),
    [
        ("match", ["--md5 HEX", "--pdq HEX", "exit codes:", "0  no match", "1  match", "2  error"]),
        (
            "push",
            [
                "algorithm,hash_hex,reference_id[,quality]",
                "JSON lines",
                '"reference_id"',
                "--batch-size",
                "exit codes:",
                "1  refused: nothing was applied",
            ],
        ),
        ("apply", ["algorithm,hash_hex,reference_id[,quality]", ".jsonl", "exit codes:"]),
        ("scan", ["--dihedral", "--report", "exit codes:", "1  something matched"]),
    ],
)
def test_help_describes_flags_formats_and_exit_codes(
    capsys: pytest.CaptureFixture[str], command: str, needles: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for needle in needles:
        assert needle in out, (command, needle)


def test_the_default_server_is_announced_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], running: Running
) -> None:
    monkeypatch.delenv("HASHMATCH_SERVER", raising=False)
    monkeypatch.setenv("HASHMATCH_TOKEN", running.tokens["hotline-a"])
    # Nothing listens on the default address in the test environment (or it answers);
    # either way the notice is printed exactly once.
    main(["--timeout", "0.5", "lists"])
    err = capsys.readouterr().err
    notice = "hashmatch-client: no --server or HASHMATCH_SERVER; using 127.0.0.1:50051\n"
    assert err.count(notice) == 1 and err.startswith(notice)
    monkeypatch.setenv("HASHMATCH_SERVER", running.address)
    assert main(["lists"]) == 0
    assert "no --server" not in capsys.readouterr().err
    # A command that opens no connection says nothing about the server.
    monkeypatch.delenv("HASHMATCH_SERVER")
    assert main(["digest", "/nonexistent/list.csv"]) == 2
    assert "no --server" not in capsys.readouterr().err
