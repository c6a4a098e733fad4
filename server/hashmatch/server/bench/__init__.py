"""Throughput sign-off: `hashmatch bench signoff` and the small measuring functions under it.

Each module is usable on its own (the pytest-benchmark suites in benchmarks/service/ use
them too):

- `corpus`:  deterministic synthetic lists, query mixes and the PDQ boundary corpus;
- `load`:    bounded closed-loop load cells (unary, batch, stream) and percentiles;
- `probes`:  list load time, retraction visibility, RSS of a process tree, correctness;
- `local`:   a temporary local `hashmatch serve` with tenants created up front;
- `slo`:     the service-level names, parsing of NAME=VALUE and PASS/FAIL;
- `machine`: CPU, cores, memory and versions for the report;
- `report`:  results.json, report.md, report.html and the PNG plots;
- `signoff`: the command itself.
"""
