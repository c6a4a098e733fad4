"""A real local server with a synthetic list, shared by the service benchmarks.

    .venv/bin/python -m pytest benchmarks/service -p no:cacheprovider \
        --benchmark-json=service-$(git rev-parse --short HEAD).json
    .venv/bin/pytest-benchmark compare service-OLD.json service-NEW.json \
        --group-by=name --columns=min,median,ops

(`--group-by=name` puts each benchmark's runs side by side, so a regression shows as a
ratio against the faster run.)

``HASHMATCH_BENCH_ENTRIES`` sets the list size (default 100,000; the sign-off uses
1,000,000). The server is `hashmatch serve` in a subprocess on 127.0.0.1 with one worker,
started once per session; files here are named bench_*.py and collected by the hook below.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hashmatch.server.bench import corpus, local, probes
from hashmatch.server.bench.corpus import SyntheticList

ENTRIES = int(os.environ.get("HASHMATCH_BENCH_ENTRIES", "100000"))
LIST = "bench"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@dataclass
class Served:
    server: local.LocalServer
    tokens: dict[str, str]
    synthetic: SyntheticList
    data_dir: Path

    @property
    def address(self) -> str:
        return self.server.address


@pytest.fixture(scope="session")
def served() -> Iterator[Served]:
    with tempfile.TemporaryDirectory(prefix="hashmatch-bench-") as tmp:
        data = Path(tmp) / "data"
        tokens = local.create_tenants(data)
        synthetic = corpus.build(ENTRIES, seed=7, retractions=200)
        with local.LocalServer(data, 1, log_path=Path(tmp) / "server.log") as server:
            probes.load_list(server.address, tokens["hotline"], LIST, synthetic)
            yield Served(server, tokens, synthetic, data)
