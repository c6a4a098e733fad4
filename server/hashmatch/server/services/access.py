"""Who may do what: roles per call, and list ownership.

A platform matches; a hotline manages only the lists it owns; a replica reads every list.
"""

from __future__ import annotations

from hashmatch.server.errors import ListNotFound, NotListOwner, Violation, WrongRole, invalid
from hashmatch.server.services import validation
from hashmatch.server.store import ListMeta, Role, Store, Tenant


def require_role(tenant: Tenant, *roles: Role) -> None:
    if tenant.role not in roles:
        allowed = " or ".join(r.value for r in roles)
        raise WrongRole(f"this call needs the {allowed} role; the caller is a {tenant.role.value}")


def not_found(name: str, field: str = "list") -> ListNotFound:
    return ListNotFound(f"no list named {name!r}", (Violation(field, "no such list"),))


def not_owner(name: str) -> NotListOwner:
    return NotListOwner(f"the list {name!r} belongs to another tenant")


def readable(store: Store, name: str, tenant: Tenant, field: str = "list") -> ListMeta:
    """A list the tenant may read: its own (hotline), or any (replica)."""
    violations: list[Violation] = []
    validation.check_list_name(name, field, violations)
    if violations:
        raise invalid(violations)
    meta = store.get_list(name)
    if meta is None:
        raise not_found(name, field)
    if tenant.role == Role.HOTLINE and meta.owner != tenant.name:
        raise not_owner(name)
    return meta


def owned(store: Store, name: str, tenant: Tenant, prefix: str = "") -> ListMeta:
    """A list the tenant owns."""
    violations: list[Violation] = []
    validation.check_list_name(name, f"{prefix}list", violations)
    if violations:
        raise invalid(violations)
    meta = store.get_list(name)
    if meta is None:
        raise not_found(name, f"{prefix}list")
    if meta.owner != tenant.name:
        raise not_owner(name)
    return meta
