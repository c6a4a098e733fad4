"""Who may do what: roles per call, list ownership, and per-list read grants.

A platform matches; a hotline manages only the lists it owns; a replica reads every list;
a tenant of any role reads a list its owner granted to it (GrantAccess).

A list the caller may not read does not exist for it: every call naming one answers the
same NOT_FOUND (code, message and details) as for a name no list has, so no tenant learns
which names other tenants' lists have. Only a list the caller may read but not write (a
grantee's) is told apart: PERMISSION_DENIED, which tells nothing the grantee did not know.
"""

from __future__ import annotations

from hashmatch.server.errors import ListNotFound, NotListOwner, Violation, WrongRole, invalid
from hashmatch.server.services import validation
from hashmatch.server.store import ListMeta, Role, Store, Tenant
from hashmatch.server.store import grants as store_grants


def require_role(tenant: Tenant, *roles: Role) -> None:
    if tenant.role not in roles:
        allowed = " or ".join(r.value for r in roles)
        raise WrongRole(f"this call needs the {allowed} role; the caller is a {tenant.role.value}")


def not_found(name: str, field: str = "list") -> ListNotFound:
    """The one refusal for a list that does not exist or that the caller may not read.
    Built from the caller's own input only, so the two cannot be told apart."""
    return ListNotFound(f"no list named {name!r}", (Violation(field, "no such list"),))


def not_owner(name: str) -> NotListOwner:
    return NotListOwner(f"the list {name!r} belongs to another tenant; it may only be read")


def may_read(store: Store, meta: ListMeta, tenant: Tenant) -> bool:
    """The tenant's own list, any list for a replica, or a list granted to the tenant."""
    return (
        tenant.role == Role.REPLICA
        or meta.owner == tenant.name
        or store_grants.is_granted(store, meta.id, tenant.name)
    )


def _named(store: Store, name: str, field: str) -> ListMeta | None:
    violations: list[Violation] = []
    validation.check_list_name(name, field, violations)
    if violations:
        raise invalid(violations)
    return store.get_list(name)


def readable(store: Store, name: str, tenant: Tenant, field: str = "list") -> ListMeta:
    """A list the tenant may read (see `may_read`), or NOT_FOUND."""
    meta = _named(store, name, field)
    if meta is None or not may_read(store, meta, tenant):
        raise not_found(name, field)
    return meta


def owned(store: Store, name: str, tenant: Tenant, field: str = "list") -> ListMeta:
    """A list the tenant owns; NOT_FOUND when it may not even read it."""
    meta = _named(store, name, field)
    if meta is None:
        raise not_found(name, field)
    if meta.owner != tenant.name:
        if may_read(store, meta, tenant):
            raise not_owner(name)
        raise not_found(name, field)
    return meta


def visible_lists(store: Store, tenant: Tenant) -> list[ListMeta]:
    """The lists ListLists shows the tenant: every list for a replica, else its own and
    those granted to it."""
    lists = store.lists()
    if tenant.role == Role.REPLICA:
        return lists
    granted = store_grants.granted_lists(store, tenant.name)
    return [m for m in lists if m.owner == tenant.name or m.id in granted]
