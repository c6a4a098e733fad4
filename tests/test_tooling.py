"""Standard gRPC tooling against the real server: health List, server reflection v1 and
v1alpha, no token needed for either."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from conftest import Running
from hashmatch.client import MD5
from hashmatch.server import demo
from hashmatch.v1 import match_pb2

ROOT = Path(__file__).resolve().parents[1]

SERVING = health_pb2.HealthCheckResponse.SERVING
SERVICES = {
    "hashmatch.v1.MatchService",
    "hashmatch.v1.ListService",
    "hashmatch.v1.ReplicationService",
    "hashmatch.v1.PlatformService",
}


def test_health_list_answers_every_status_without_an_error_log(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with grpc.insecure_channel(running.address) as channel:
        call = channel.unary_unary(
            "/grpc.health.v1.Health/List",
            request_serializer=health_pb2.HealthListRequest.SerializeToString,
            response_deserializer=health_pb2.HealthListResponse.FromString,
        )
        answer = call(health_pb2.HealthListRequest(), timeout=5)
    statuses = {name: r.status for name, r in answer.statuses.items()}
    assert statuses[""] == SERVING
    assert statuses["hashmatch.v1.MatchService"] == SERVING
    assert {name for name in statuses if name} == SERVICES
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_health_check_still_answers(running: Running) -> None:
    with grpc.insecure_channel(running.address) as channel:
        call = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        answer = call(health_pb2.HealthCheckRequest(service="hashmatch.v1.MatchService"))
    assert answer.status == SERVING


def list_services(running: Running, package: str) -> set[str]:
    """A list_services request to `grpc.reflection.<package>.ServerReflection`; v1 and
    v1alpha are the same messages on the wire, so the v1alpha classes encode both."""
    with grpc.insecure_channel(running.address) as channel:
        call = channel.stream_stream(
            f"/grpc.reflection.{package}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        answers = list(
            call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        )
    assert len(answers) == 1
    return {s.name for s in answers[0].list_services_response.service}


@pytest.mark.parametrize("package", ["v1", "v1alpha"])
def test_reflection_lists_the_services(running: Running, package: str) -> None:
    names = list_services(running, package)
    assert names >= SERVICES | {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }


@pytest.mark.parametrize("package", ["v1", "v1alpha"])
def test_reflection_describes_every_listed_service(running: Running, package: str) -> None:
    """What `grpcurl describe` does: each listed service resolves to its file."""
    names = sorted(list_services(running, package))
    with grpc.insecure_channel(running.address) as channel:
        call = channel.stream_stream(
            f"/grpc.reflection.{package}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        requests = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=n) for n in names]
        answers = list(call(iter(requests), timeout=5))
    for name, answer in zip(names, answers, strict=True):
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in answer.file_descriptor_response.file_descriptor_proto
        ]
        package_name, _, service = name.rpartition(".")
        assert any(
            f.package == package_name and service in {s.name for s in f.service} for f in files
        ), name


def test_protoset_holds_the_contract_and_the_readme_example() -> None:
    """proto/hashmatch-v1.protoset builds on its own (imports included) and the README's
    grpcurl JSON, base64 bytes included, is the demo list's MD5."""
    raw = (ROOT / "proto" / "hashmatch-v1.protoset").read_bytes()
    pool = descriptor_pool.DescriptorPool()
    for f in descriptor_pb2.FileDescriptorSet.FromString(raw).file:
        pool.Add(f)
    match = pool.FindServiceByName("hashmatch.v1.MatchService")
    assert {m.name for m in match.methods} >= {"Match", "MatchStream"}
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"-d '(\{.*?\})'[\s\\]+\S+ hashmatch\.v1\.MatchService/Match\b", readme)
    assert example, "README shows a grpcurl Match call"
    request = json_format.Parse(example.group(1), match_pb2.MatchRequest())
    assert request.hashes[0].algorithm == MD5
    assert request.hashes[0].value.hex() == demo.BRIDGE[MD5]
