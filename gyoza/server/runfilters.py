"""The SQL conditions of the query index's run filters: GET /runs's query parameters and the bulk actions' filter
(POST /runs/cancel, /runs/retry, /runs/purge) share them."""

from __future__ import annotations

from typing import Any

from gyoza.schema import ReasonCode, RunListQuery, RunState

_EQUALITY_FILTERS = ("op_definition", "image", "topic", "worker_id")
_CREATED_FILTERS = {"created_gte": ">=", "created_gt": ">", "created_lte": "<=", "created_lt": "<"}


def filter_conditions(
    batch_id: str | None, labels: dict[str, str], states: list[RunState], reason: ReasonCode | None
) -> tuple[list[str], list[Any]]:
    """SQL conditions for the batch, label, state and reason filters (GET /runs and the bulk actions alike)."""
    where: list[str] = []
    params: list[Any] = []
    if batch_id is not None:
        where.append("batch_id = ?")
        params.append(batch_id)
    for key, value in labels.items():
        # Keys match LABEL_KEY_PATTERN (no quote or backslash), so the quoted JSON path is safe to build.
        where.append(f"json_extract(labels, '$.\"{key}\"') = ?")
        params.append(value)
    if states:
        where.append(f"state IN ({', '.join('?' * len(states))})")
        params += [s.value for s in states]
    if reason is not None:
        where.append("json_extract(body, '$.state_reason.code') = ?")
        params.append(reason.value)
    return where, params


def _label_pairs(filters: list[str] | None) -> dict[str, str]:
    """``k:v`` filters as {k: v}; the same key twice keeps both conditions apart by failing to match (AND)."""
    pairs: dict[str, str] = {}
    for item in filters or []:
        key, _, value = item.partition(":")
        if pairs.get(key, value) != value:
            pairs[key] = "\x00"  # no label value holds a NUL: two different values for one key match nothing
        else:
            pairs[key] = value
    return pairs


def list_conditions(query: RunListQuery) -> tuple[list[str], list[Any]]:
    """SQL conditions (and their parameters) for GET /runs's filters."""
    where: list[str] = []
    params: list[Any] = []
    if query.state:
        where.append(f"state IN ({', '.join('?' * len(query.state))})")
        params += [s.value for s in query.state]
    for column in _EQUALITY_FILTERS:
        value = getattr(query, column)
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    for field, op in _CREATED_FILTERS.items():
        value = getattr(query, field)
        if value is not None:
            where.append(f"created_at {op} ?")
            params.append(value)
    more, more_params = filter_conditions(query.batch_id, _label_pairs(query.label), [], None)
    return where + more, params + more_params
