"""Authentication, roles, list ownership and per-item limits for every RPC.

The calls are enumerated from the hashmatch.v1 service descriptors, so a new RPC is
covered (and, until it is added to ROLE_TABLE, fails) without anyone remembering to.
Requests go as raw bytes over the method's own streaming shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from conftest import Running
from hashmatch.client import MD5, make_hash
from hashmatch.v1 import lists_pb2, match_pb2, match_pb2_grpc, platform_pb2, replication_pb2

TIMEOUT = 2.0  # long enough for a loaded machine; only WatchChanges/Follow wait it out
LIST = "iwf"
OWNER = "hotline-a"

METHODS: list[MethodDescriptor] = [
    method
    for module in (match_pb2, lists_pb2, replication_pb2, platform_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]


def key(method: MethodDescriptor) -> str:
    return f"{method.containing_service.name}/{method.name}"


BY_KEY = {key(m): m for m in METHODS}

# The tenants of conftest's `running` server and their roles.
ROLES = {
    "platform": "platform",
    "hotline-a": "hotline",
    "hotline-b": "hotline",
    "replica": "replica",
}

PLATFORM = frozenset({"platform"})
HOTLINE = frozenset({"hotline"})
REPLICA = frozenset({"replica"})
ANY = frozenset({"platform", "hotline", "replica"})


@dataclass(frozen=True)
class Rule:
    """Roles that pass the role check, and tenants (of such a role) that the service
    answers NOT_FOUND because the list named ("iwf", hotline-a's) is not theirs to read."""

    roles: frozenset[str]
    hidden: frozenset[str] = frozenset()


# Read from services/*.py (require_role / _writable, then access.owned / readable).
OWNED = Rule(HOTLINE, frozenset({"hotline-b"}))
ROLE_TABLE: dict[str, Rule] = {
    "MatchService/Match": Rule(PLATFORM),
    "MatchService/MatchBatch": Rule(PLATFORM),
    "MatchService/MatchStream": Rule(PLATFORM),
    "MatchService/MatchBatchStream": Rule(PLATFORM),
    # A taken name is refused to another hotline without NOT_FOUND (no list lookup).
    "ListService/CreateList": Rule(HOTLINE),
    "ListService/GetList": Rule(ANY, frozenset({"platform", "hotline-b"})),
    "ListService/ListLists": Rule(ANY),
    "ListService/ApplyChanges": OWNED,
    "ListService/UploadChanges": OWNED,
    "ListService/WatchChanges": Rule(ANY, frozenset({"platform", "hotline-b"})),
    "ListService/GetReferenceStats": OWNED,
    "ListService/GetFeedback": OWNED,
    "ListService/ListQuarantine": OWNED,
    "ListService/ReleaseQuarantine": OWNED,
    "ListService/UpdateList": OWNED,
    "ListService/GrantAccess": OWNED,
    "ListService/RevokeAccess": OWNED,
    "ListService/ListGrants": OWNED,
    "ListService/GetAuditLog": OWNED,
    "ReplicationService/GetTenants": Rule(REPLICA),
    "ReplicationService/Follow": Rule(REPLICA),
    "PlatformService/ReportFalsePositive": Rule(PLATFORM),
    "PlatformService/GetSubscriptions": Rule(PLATFORM),
    "PlatformService/SetSubscriptions": Rule(PLATFORM),
    "PlatformService/UpdateAllowList": Rule(PLATFORM),
    "PlatformService/GetAllowList": Rule(PLATFORM),
}

# What an allowed caller must never hear for the minimal request.
NOT_SERVED = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
}


def md5() -> Message:
    return make_hash(MD5, bytes(range(16)))


def _names_a_list(field: FieldDescriptor) -> bool:
    singular_string = field.type == field.TYPE_STRING and not field.is_repeated
    return singular_string and field.name in ("list", "name")


def names_list(method: MethodDescriptor) -> bool:
    return any(_names_a_list(f) for f in method.input_type.fields)


def request_for(method: MethodDescriptor, list_name: str = LIST) -> bytes:
    """The input type's default message, naming `list_name` where it names a list."""
    message = message_factory.GetMessageClass(method.input_type)()
    for field in method.input_type.fields:
        if _names_a_list(field):
            setattr(message, field.name, list_name)
    if isinstance(message, match_pb2.MatchRequest):
        message.hashes.append(md5())
    elif isinstance(message, match_pb2.MatchBatchRequest):
        message.items.add().hashes.append(md5())
    body: bytes = message.SerializeToString()
    return body


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str | None
    status_bin: bytes | None


def _refused(error: grpc.RpcError) -> Outcome:
    trailers = error.trailing_metadata() or ()
    status_bin = next((v for k, v in trailers if k == "grpc-status-details-bin"), None)
    return Outcome(error.code(), error.details(), status_bin)


def call(
    channel: grpc.Channel,
    method: MethodDescriptor,
    body: bytes,
    metadata: tuple[tuple[str, str], ...],
) -> Outcome:
    """Sends `body` as the method's (only) request message; for a streaming answer, the
    outcome of the first next()."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    md = metadata or None
    try:
        if not method.server_streaming:
            if method.client_streaming:
                unary_answer = channel.stream_unary(path)(
                    iter([body]), timeout=TIMEOUT, metadata=md
                )
            else:
                unary_answer = channel.unary_unary(path)(body, timeout=TIMEOUT, metadata=md)
            assert isinstance(unary_answer, bytes)
            return Outcome(grpc.StatusCode.OK, None, None)
        if method.client_streaming:
            stream = channel.stream_stream(path)(iter([body]), timeout=TIMEOUT, metadata=md)
        else:
            stream = channel.unary_stream(path)(body, timeout=TIMEOUT, metadata=md)
        try:
            next(stream)
        except StopIteration:
            pass
        finally:
            stream.cancel()
        return Outcome(grpc.StatusCode.OK, None, None)
    except grpc.RpcError as error:
        return _refused(error)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def with_list(running: Running) -> Running:
    running.lists(OWNER).create_list(LIST)
    return running


@pytest.fixture
def channel(running: Running) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(running.address) as ch:
        yield ch


def test_descriptors_are_found() -> None:
    assert {m.containing_service.name for m in METHODS} == {
        "MatchService",
        "ListService",
        "ReplicationService",
        "PlatformService",
    }
    assert "MatchService/MatchBatch" in BY_KEY


def test_role_table_covers_exactly_the_described_rpcs() -> None:
    assert set(ROLE_TABLE) == set(BY_KEY), (
        "ROLE_TABLE must name every RPC of the service descriptors and nothing else"
    )
    for name, rule in ROLE_TABLE.items():
        assert rule.roles and rule.roles <= ANY, name
        for tenant in rule.hidden:
            assert ROLES[tenant] in rule.roles, f"{name}: {tenant} is refused by role first"
            assert names_list(BY_KEY[name]), f"{name} names no list to hide"


BAD_CREDENTIALS = {
    "missing": (),
    "malformed": (("authorization", "Basic x"),),
    "unknown": bearer("not-a-token-of-any-tenant"),
}


@pytest.mark.parametrize("name", sorted(BY_KEY))
def test_every_rpc_refuses_missing_malformed_and_unknown_tokens(
    with_list: Running, channel: grpc.Channel, name: str
) -> None:
    method = BY_KEY[name]
    body = request_for(method)
    for case, metadata in BAD_CREDENTIALS.items():
        outcome = call(channel, method, body, metadata)
        assert outcome.code == grpc.StatusCode.UNAUTHENTICATED, (name, case, outcome)


@pytest.mark.parametrize("name", sorted(BY_KEY))
def test_every_rpc_checks_the_callers_role(
    with_list: Running, channel: grpc.Channel, name: str
) -> None:
    assert set(with_list.tokens) == set(ROLES)
    method = BY_KEY[name]
    rule = ROLE_TABLE[name]
    body = request_for(method)
    for tenant, role in ROLES.items():
        outcome = call(channel, method, body, bearer(with_list.tokens[tenant]))
        if role not in rule.roles:
            expected = grpc.StatusCode.PERMISSION_DENIED
            assert outcome.code == expected, (name, tenant, outcome)
        elif tenant in rule.hidden:
            assert outcome.code == grpc.StatusCode.NOT_FOUND, (name, tenant, outcome)
        else:
            assert outcome.code not in NOT_SERVED, (name, tenant, outcome)


def owner_checked() -> list[str]:
    """ListService calls that name a list and hide another hotline's list."""
    named = [
        k
        for k, m in BY_KEY.items()
        if m.containing_service.name == "ListService" and "hotline-b" in ROLE_TABLE[k].hidden
    ]
    hotline_only = {
        k
        for k, m in BY_KEY.items()
        if m.containing_service.name == "ListService"
        and names_list(m)
        and ROLE_TABLE[k].roles == HOTLINE
        and k != "ListService/CreateList"  # creates the name; owns nothing yet
    }
    assert hotline_only <= set(named)
    return sorted(named)


def test_owner_checks_cover_the_hotline_only_list_calls() -> None:
    assert len(owner_checked()) >= 13


@pytest.mark.parametrize("name", owner_checked())
def test_another_hotlines_list_is_indistinguishable_from_no_list(
    running: Running, channel: grpc.Channel, name: str
) -> None:
    method = BY_KEY[name]
    body = request_for(method)
    metadata = bearer(running.tokens["hotline-b"])
    absent = call(channel, method, body, metadata)
    running.lists(OWNER).create_list(LIST)
    # hotline-a's own call succeeds past the owner check: the list exists now.
    assert call(channel, method, body, bearer(running.tokens[OWNER])).code not in NOT_SERVED
    theirs = call(channel, method, body, metadata)
    assert absent.code == grpc.StatusCode.NOT_FOUND, (name, absent)
    assert theirs == absent, name
    assert absent.status_bin is not None, name


# -- per-item limits, alike on every match call ------------------------------------------


def violation_fields(status: status_pb2.Status) -> list[str]:
    fields: list[str] = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return fields


def too_many_hashes() -> match_pb2.MatchRequest:
    return match_pb2.MatchRequest(
        item_id="x", hashes=[make_hash(MD5, bytes([i]) * 16) for i in range(17)]
    )


def too_long_id() -> match_pb2.MatchRequest:
    return match_pb2.MatchRequest(item_id="a" * 257, hashes=[md5()])


ITEMS = {"hashes": too_many_hashes, "item_id": too_long_id}


@pytest.mark.parametrize("field", sorted(ITEMS))
def test_per_item_limits_alike_on_every_match_call(
    running: Running, channel: grpc.Channel, field: str
) -> None:
    item = ITEMS[field]()
    stub = match_pb2_grpc.MatchServiceStub(channel)
    md = bearer(running.tokens["platform"])
    code = grpc.StatusCode.INVALID_ARGUMENT.value[0]

    with pytest.raises(grpc.RpcError) as refused:
        stub.Match(item, timeout=TIMEOUT, metadata=md)
    error = refused.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    assert violation_fields(status) == [field], "Match"

    batch = stub.MatchBatch(match_pb2.MatchBatchRequest(items=[item]), timeout=TIMEOUT, metadata=md)
    assert not batch.HasField("error")
    (result,) = batch.results
    assert result.error.code == code, "MatchBatch"
    assert violation_fields(result.error) == [f"items[0].{field}"], "MatchBatch"

    (answer,) = stub.MatchStream(iter([item]), timeout=TIMEOUT, metadata=md)
    assert answer.error.code == code, "MatchStream"
    assert violation_fields(answer.error) == [field], "MatchStream"

    (batch,) = stub.MatchBatchStream(
        iter([match_pb2.MatchBatchRequest(items=[item])]), timeout=TIMEOUT, metadata=md
    )
    assert not batch.HasField("error")
    (result,) = batch.results
    assert result.error.code == code, "MatchBatchStream"
    assert violation_fields(result.error) == [f"items[0].{field}"], "MatchBatchStream"
