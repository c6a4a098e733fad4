"""The embedded LMDB store: tenants, lists, entries, the change log and the audit log.

Only this package imports lmdb; the rest of the server speaks in tenants, lists and change
records. One module per area: `env` (the environment, transactions, the audit log),
`tenants`, `lists` (entries and batches), `staging` (whole-file uploads), `trust`
(statistics, quarantine, feedback), `platforms` (subscriptions, allow-lists), `changelog`
(the record format), `probes` (probe detection's own environment); typed `records`,
`errors`, and every key layout in `keys`.
Every write is one LMDB write transaction (sync on), so an acknowledged batch survives a
crash and an unacknowledged one is either fully there or fully absent.

Named databases and their keys (integers big-endian, so keys sort numerically):
  meta      b"seq" -> u64 commits so far (every write bumps it; followers poll it),
            b"next_list_id" -> u32
  tenants   name -> JSON {role, created_at}
  tokens    SHA-256(token) -> tenant name (tokens themselves are never stored)
  lists     name -> JSON list metadata (ListMeta)
  entries   list_id u32 | algorithm u8 | hash -> entry_id u64 LE
  refs      list_id u32 | entry_id u64 -> reference ID (UTF-8)
  changes   list_id u32 | version u64 -> ChangeRecord
  batches   list_id u32 | batch_id -> version u64 | request fingerprint (16 bytes)
  audit     seq u64 -> JSON {at, actor, action, ...}
  stats     list_id u32 | reference ID -> FloodStat (records.py): matches, last, flood window,
            every tenant summed
  matched   list_id u32 | reference length u16 | reference ID | tenant name -> TenantShare
            (records.py): that tenant matched it (how often, when last, its flood share)
  quarantine list_id u32 | reference ID -> JSON {since, window_matches, baseline}
  feedback  list_id u32 | reference ID -> JSON {counts by reason, newest notes, last}
  platforms tenant name -> JSON {all_lists, lists}: which lists apply to a platform
  allow     tenant name | 0 | algorithm u8 | hash -> b"": a platform's allow-list
  uploads   stage_id u64 -> JSON {pid, started, list, actor, at}: a whole-file upload
            being received (staging.py); meta b"next_stage_id" -> u64
  staged    stage_id u64 | message u32 -> the message's wire bytes, as received
  staged_keys stage_id u64 | algorithm u8 | hash -> b"": what a replacing file upserts
"""

from hashmatch.server.store.env import DEFAULT_MAP_SIZE
from hashmatch.server.store.errors import (
    BatchIdReused,
    BatchRefused,
    ListExists,
    ListNotFound,
    StaleVersion,
    StoreError,
    StoreFull,
    TenantExists,
    TenantNotFound,
)
from hashmatch.server.store.keys import ref_key
from hashmatch.server.store.platforms import Platforms
from hashmatch.server.store.records import (
    ApplyOutcome,
    ListMeta,
    PlatformSettings,
    Role,
    Tenant,
    token_hash,
)
from hashmatch.server.store.staging import Published, RetireBatch, StageRefused, Staging
from hashmatch.server.store.tenants import Tenants
from hashmatch.server.store.trust import Trust

__all__ = [
    "DEFAULT_MAP_SIZE",
    "ApplyOutcome",
    "BatchIdReused",
    "BatchRefused",
    "ListExists",
    "ListMeta",
    "ListNotFound",
    "PlatformSettings",
    "Published",
    "RetireBatch",
    "Role",
    "StageRefused",
    "StaleVersion",
    "Store",
    "StoreError",
    "StoreFull",
    "Tenant",
    "TenantExists",
    "TenantNotFound",
    "ref_key",
    "token_hash",
]


class Store(Tenants, Trust, Platforms, Staging):
    """The store: one LMDB environment, every area's operations."""
