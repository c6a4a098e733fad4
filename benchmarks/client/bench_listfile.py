"""Reading and checking a list file before a push (push.summarize): rows/s and MB/s of CPU
time for each format, on generated files (half MD5, half PDQ; random values).

Run (one process, one thread; CPU time, so other load on the machine moves it little):

    nice -n 10 .venv/bin/python benchmarks/client/bench_listfile.py --rows 200000
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from hashmatch.client.push import summarize


def _csv(path: Path, rows: int, rng: random.Random) -> None:
    with path.open("w") as f:
        for i in range(rows):
            if i % 2:
                f.write(f"md5,{rng.randbytes(16).hex()},ref-{i}\n")
            else:
                f.write(f"pdq,{rng.randbytes(32).hex()},ref-{i},90\n")


def _ncmec_xml(path: Path, rows: int, rng: random.Random) -> None:
    with path.open("w") as f:
        f.write('<?xml version="1.0"?>\n<queryResult><images>\n')
        for i in range(rows // 2):
            f.write(
                f"<image><id>e{i}</id><classification>A1</classification><fingerprints>\n"
                f"<md5>{rng.randbytes(16).hex()}</md5>\n<pdq>{rng.randbytes(32).hex()}</pdq>\n"
                "</fingerprints></image>\n"
            )
        f.write("</images></queryResult>\n")


def _stopncii_json(path: Path, rows: int, rng: random.Random) -> None:
    records = (
        f'{{"signalType": "ImagePDQ", "hashValue": "{rng.randbytes(32).hex()}", '
        '"hashStatus": "Active"}'
        for _ in range(rows)
    )
    path.write_text('{"hashRecords": [\n' + ",\n".join(records) + "\n]}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    rows = parser.parse_args().rows
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as folder:
        for name, write in (
            ("list.csv", _csv),
            ("list.xml", _ncmec_xml),
            ("list.json", _stopncii_json),
        ):
            path = Path(folder) / name
            write(path, rows, rng)
            start = time.process_time()
            summary = summarize(path, retire=False, pdq_min_quality=50)
            seconds = time.process_time() - start
            mb = path.stat().st_size / 1e6
            print(
                f"{summary.format:14} {summary.rows:>9,} rows {seconds:6.2f} s CPU "
                f"{summary.rows / seconds:>9,.0f} rows/s {mb / seconds:5.1f} MB/s"
            )


if __name__ == "__main__":
    main()
