"""deploy/: the Kubernetes manifests and the Containerfile agree with `hashmatch serve`.

Every container argument is parsed by the real serve parser (exact flag names, no
abbreviations) and loaded into Settings; ports, probes, scrape annotations and Services
line up with --listen and --metrics-listen; kustomize lists every file. The TLS
component's JSON 6902 patch is applied here and checked the same way.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (dev extra) parses the manifests")

from hashmatch.server.cli import serve  # noqa: E402
from hashmatch.server.settings import ENV_ALIASES, ENV_PREFIX, Settings  # noqa: E402
from hashmatch.v1 import lists_pb2, match_pb2  # noqa: E402

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S = DEPLOY / "kubernetes"
HEALTH_SERVICES = {
    "",
    lists_pb2.DESCRIPTOR.services_by_name["ListService"].full_name,
    match_pb2.DESCRIPTOR.services_by_name["MatchService"].full_name,
}


def _serve_parser() -> argparse.ArgumentParser:
    sub = argparse.ArgumentParser(prog="hashmatch").add_subparsers()
    serve.add_parser(sub)
    parser: argparse.ArgumentParser = sub.choices["serve"]
    return parser


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _pointer(doc: Any, path: str) -> tuple[Any, str]:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
    for part in parts[:-1]:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc, parts[-1]


def _patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON 6902 operations the manifests use: add (also `-`), replace, remove."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parent, key = _pointer(doc, op["path"])
        if op["op"] == "add" and isinstance(parent, list):
            parent.insert(len(parent) if key == "-" else int(key), op["value"])
        elif op["op"] in ("add", "replace"):
            if op["op"] == "replace":
                assert (int(key) if isinstance(parent, list) else key) in (
                    range(len(parent)) if isinstance(parent, list) else parent
                ), op
            parent[int(key) if isinstance(parent, list) else key] = op["value"]
        elif op["op"] == "remove":
            del parent[int(key) if isinstance(parent, list) else key]
        else:
            raise AssertionError(f"unsupported patch op {op}")
    return doc


def _base() -> list[dict[str, Any]]:
    kust = _load(K8S / "kustomization.yaml")[0]
    return [d for f in kust["resources"] for d in _load(K8S / f)]


def _with_tls() -> list[dict[str, Any]]:
    comp = _load(K8S / "tls" / "kustomization.yaml")[0]
    assert comp["kind"] == "Component"
    docs = _base()
    for p in comp["patches"]:
        ops = yaml.safe_load((K8S / "tls" / p["path"]).read_text(encoding="utf-8"))
        target = p["target"]
        hits = [
            i
            for i, d in enumerate(docs)
            if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]
        ]
        assert len(hits) == 1, target
        docs[hits[0]] = _patch(docs[hits[0]], ops)
    return docs


def _workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("StatefulSet", "Deployment")]


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _check_args(args: list[str]) -> argparse.Namespace:
    parser = _serve_parser()
    known = {s for a in parser._actions for s in a.option_strings}
    assert args[0] == "serve", args
    for arg in args[1:]:
        if arg.startswith("--"):
            assert arg.split("=", 1)[0] in known, f"{arg} is not a `hashmatch serve` flag"
    ns = parser.parse_args(args[1:])
    Settings.load({k: getattr(ns, k) for k in serve.SERVE_FLAGS}, env={})
    return ns


def test_kustomization_lists_every_manifest() -> None:
    kust = _load(K8S / "kustomization.yaml")[0]
    listed = set(kust["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    comp = _load(K8S / "tls" / "kustomization.yaml")[0]
    tls_files = {p.name for p in (K8S / "tls").glob("*.yaml")} - {"kustomization.yaml"}
    assert {p["path"] for p in comp["patches"]} == tls_files
    kinds = {d["kind"] for d in _base()}
    assert {"StatefulSet", "Deployment", "Service", "PodDisruptionBudget"} <= kinds


@pytest.mark.parametrize("variant", ["plain", "tls"])
def test_containers_agree_with_the_cli(variant: str) -> None:
    docs = _base() if variant == "plain" else _with_tls()
    services = [d for d in docs if d["kind"] == "Service"]
    for w in _workloads(docs):
        name = w["metadata"]["name"]
        pod = w["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert w["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        (c,) = pod["spec"]["containers"]
        ns = _check_args(c["args"])
        for env in c.get("env", []):
            fields = {ENV_ALIASES.get(f, ENV_PREFIX + f.upper()) for f in serve.SERVE_FLAGS}
            assert env["name"] in fields, f"{name}: {env['name']} is read by no setting"
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["grpc"] == _port(ns.listen), name
        assert ports["metrics"] == _port(ns.metrics_listen), name
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = c[kind]
            check = probe.get("grpc") or probe.get("tcpSocket")
            assert check is not None, f"{name} {kind}"
            assert check["port"] in (ports["grpc"], "grpc"), f"{name} {kind}"
            if "grpc" in probe:
                assert ns.tls_cert is None, f"{name}: native gRPC probes cannot speak TLS"
                assert probe["grpc"].get("service", "") in HEALTH_SERVICES
        if ns.tls_cert is None and name.endswith("replica"):
            # Liveness must not restart a replica that is re-copying a list.
            assert c["livenessProbe"]["grpc"]["service"] != ""
        ann = pod["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true"
        assert int(ann["prometheus.io/port"]) == ports["metrics"]
        assert ann["prometheus.io/path"] == "/metrics"
        assert pod["spec"]["terminationGracePeriodSeconds"] > (ns.grace or 5)
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts["data"] == str(ns.data_dir)
        for flag in (ns.tls_cert, ns.tls_key):
            if flag is not None:
                assert any(str(flag).startswith(m + "/") for m in mounts.values()), flag
        req, lim = c["resources"]["requests"]["memory"], c["resources"]["limits"]["memory"]
        assert req.endswith("Gi") and lim.endswith("Gi") and int(req[:-2]) <= int(lim[:-2])
        # The Service in front of these pods targets the same ports.
        (svc,) = [
            s
            for s in services
            if s["spec"]["selector"].items() <= labels.items()
            and labels["app.kubernetes.io/component"] in s["metadata"]["name"]
        ]
        for sp in svc["spec"]["ports"]:
            target = sp["targetPort"]
            assert ports.get(target, target) == ports[sp["name"]], (svc["metadata"]["name"], sp)


def test_primary_and_replicas() -> None:
    docs = _base()
    (primary,) = [d for d in docs if d["kind"] == "StatefulSet"]
    (replica,) = [d for d in docs if d["kind"] == "Deployment"]
    assert primary["spec"]["replicas"] == 1
    claims = {t["metadata"]["name"] for t in primary["spec"]["volumeClaimTemplates"]}
    assert "data" in claims
    (psvc,) = [
        d
        for d in docs
        if d["kind"] == "Service" and d["metadata"]["name"] == (primary["spec"]["serviceName"])
    ]
    (c,) = replica["spec"]["template"]["spec"]["containers"]
    ns = _check_args(c["args"])
    host, port = ns.follow.rsplit(":", 1)
    assert host == psvc["metadata"]["name"]
    assert int(port) in {p["port"] for p in psvc["spec"]["ports"] if p["name"] == "grpc"}
    token = {e["name"]: e for e in c["env"]}["HASHMATCH_TOKEN"]
    assert "secretKeyRef" in token["valueFrom"]
    (pdb,) = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert (
        pdb["spec"]["selector"]["matchLabels"].items()
        <= replica["spec"]["template"]["metadata"]["labels"].items()
    )


def test_containerfile() -> None:
    lines = (DEPLOY / "Containerfile").read_text(encoding="utf-8").splitlines()
    froms = [line for line in lines if line.startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage"
    assert "slim" in froms[-1]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    (entry,) = [line for line in lines if line.startswith("ENTRYPOINT ")]
    assert json.loads(entry.split(" ", 1)[1]) == ["hashmatch"]
    (cmd,) = [line for line in lines if line.startswith("CMD ")]
    args = json.loads(cmd.split(" ", 1)[1])
    ns = _check_args(args)
    exposed = {
        int(p) for line in lines if line.startswith("EXPOSE ") for p in shlex.split(line)[1:]
    }
    assert {_port(ns.listen), _port(ns.metrics_listen)} <= exposed
    # The image's user matches the pods' runAsUser.
    for w in _workloads(_base()):
        assert (
            str(w["spec"]["template"]["spec"]["securityContext"]["runAsUser"])
            == users[-1].split(":")[0]
        )
