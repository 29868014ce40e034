"""Rows <-> plain records: the store's functions under one name (``repository as repo``).

Each lives in the module that owns it; this module re-exports them, so callers keep one
import. Every write is one transaction: all or nothing.

- :mod:`~cj_runner.storage.tables`: the tables' Core handles, ``utcnow``
- :mod:`~cj_runner.storage.records`: the plain records read and written
- :mod:`~cj_runner.storage.assignments`: assignments and their anchors
- :mod:`~cj_runner.storage.batch_rows`: batches, their nodes, calls, waves, status, budget
- :mod:`~cj_runner.storage.locks`: the run lock and its fence
- :mod:`~cj_runner.storage.wave_ends`: what a closed wave and a finalization write
- :mod:`~cj_runner.storage.attempts`: calls left unanswered by a stop or a crash
- :mod:`~cj_runner.storage.cache`: the judgment cache
"""

from __future__ import annotations

from cj_runner.storage.assignments import get_assignment, list_anchors, register_anchors
from cj_runner.storage.attempts import (
    mark_in_flight_lost,
    mark_possibly_sent,
    mark_unanswered_lost,
    unrelease,
)
from cj_runner.storage.batch_rows import (
    count_rows,
    create_batch,
    find_batch,
    insert_batch,
    list_batches,
    load_attempts,
    load_nodes,
    load_projections,
    load_waves,
    set_status,
    set_total_budget,
)
from cj_runner.storage.cache import cache_entries, cache_lookup
from cj_runner.storage.locks import (
    LOCK_STALE_AFTER,
    acquire_lock,
    fence,
    heartbeat,
    lock_holder,
    release_lock,
)
from cj_runner.storage.records import (
    AnchorRecord,
    AssignmentRecord,
    BatchRecord,
    NewAnchor,
    NewNode,
    NodeRecord,
    RegisterResult,
)
from cj_runner.storage.tables import (
    T_ANCHORS,
    T_ASSIGNMENTS,
    T_BATCHES,
    T_CACHE,
    T_COMPARISONS,
    T_NODES,
    T_PROJECTIONS,
    T_STATE,
    T_TEXTS,
    T_WAVES,
    utcnow,
)
from cj_runner.storage.wave_ends import save_final, save_wave_end, write_wave_end

__all__ = [
    "LOCK_STALE_AFTER",
    "T_ANCHORS",
    "T_ASSIGNMENTS",
    "T_BATCHES",
    "T_CACHE",
    "T_COMPARISONS",
    "T_NODES",
    "T_PROJECTIONS",
    "T_STATE",
    "T_TEXTS",
    "T_WAVES",
    "AnchorRecord",
    "AssignmentRecord",
    "BatchRecord",
    "NewAnchor",
    "NewNode",
    "NodeRecord",
    "RegisterResult",
    "acquire_lock",
    "cache_entries",
    "cache_lookup",
    "count_rows",
    "create_batch",
    "fence",
    "find_batch",
    "get_assignment",
    "heartbeat",
    "insert_batch",
    "list_anchors",
    "list_batches",
    "load_attempts",
    "load_nodes",
    "load_projections",
    "load_waves",
    "lock_holder",
    "mark_in_flight_lost",
    "mark_possibly_sent",
    "mark_unanswered_lost",
    "register_anchors",
    "release_lock",
    "save_final",
    "save_wave_end",
    "set_status",
    "set_total_budget",
    "unrelease",
    "utcnow",
    "write_wave_end",
]
