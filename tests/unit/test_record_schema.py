"""Stored records keep what they do not know at every level; bodies refuse it at every level (issue 9 item 2)."""

from __future__ import annotations

import json
import typing
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from gyoza.errors import RecordTooNew
from gyoza.schema import (
    SCHEMA_VERSION,
    ApiKeyRecord,
    Constraints,
    DefinitionPointer,
    HeartbeatIn,
    IdempotencyEntry,
    LeaderLease,
    OpDefinition,
    RegistryCredential,
    RunFromDefinitionIn,
    RunRecord,
    RunTemplate,
    SecretRecord,
    StoredRecord,
    WorkerRecord,
    known_fields,
    validation_problems,
)
from gyoza.services.runs import _with_overrides

STORED = {
    RunRecord, OpDefinition, DefinitionPointer, WorkerRecord, IdempotencyEntry, LeaderLease, ApiKeyRecord,
    SecretRecord, RegistryCredential,
}  # fmt: skip


def _models_in(annotation: Any) -> set[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {annotation}
    found: set[type[BaseModel]] = set()
    for arg in typing.get_args(annotation):
        found |= _models_in(arg)
    return found


def _reachable(model: type[BaseModel]) -> set[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()
    todo = [model]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for field in current.model_fields.values():
            todo.extend(_models_in(field.annotation))
    return seen


def _subclasses(cls: type) -> set[type]:
    return {sub for direct in cls.__subclasses__() for sub in {direct} | _subclasses(direct)}


def test_every_stored_record_is_known_here() -> None:
    # A new KV record must join STORED, so the checks below cover it.
    assert _subclasses(StoredRecord) == STORED


@pytest.mark.parametrize("record", sorted(STORED, key=lambda m: m.__name__), ids=lambda m: m.__name__)
def test_every_model_inside_a_stored_record_keeps_unknown_fields(record: type[BaseModel]) -> None:
    refusing = {
        m.__name__: m.model_config.get("extra") for m in _reachable(record) if m.model_config.get("extra") != "allow"
    }
    assert refusing == {}


def test_a_worker_record_round_trips_unknown_fields_at_every_level() -> None:
    stored = {
        "id": "w1", "status": "ONLINE", "registered_at": "2026-01-01T00:00:00Z",
        "last_heartbeat": "2026-01-01T00:00:00Z", "future": {"a": 1},
        "resources": {
            "cpu": 4.0, "ram_mb": 1024, "future_r": [1], "gpus": [{"index": 0, "vram_mb": 10, "future_g": "x"}],
        },
    }  # fmt: skip
    again = json.loads(WorkerRecord.model_validate_json(json.dumps(stored)).model_dump_json())
    assert again["future"] == {"a": 1}
    assert again["resources"]["future_r"] == [1]
    assert again["resources"]["gpus"][0]["future_g"] == "x"
    assert again["schema_version"] == SCHEMA_VERSION


def test_a_body_refuses_unknown_fields_at_every_level_naming_them() -> None:
    body = {"resources": {"cpu": 1, "ram_mb": 1, "gpus": [{"index": 0, "vram_mb": 1, "typo": 1}]}, "extra": 1}
    with pytest.raises(ValidationError) as raised:
        HeartbeatIn.model_validate_json(json.dumps(body))
    fields = {p["field"] for p in validation_problems(raised.value)}
    assert fields == {"resources.gpus.0.typo", "extra"}
    with pytest.raises(ValidationError):
        HeartbeatIn.model_validate(body)


def test_schema_version_is_checked_on_read() -> None:
    old = {"run_id": "r1"}  # written before records carried a version: read as version 1
    assert IdempotencyEntry.model_validate_json(json.dumps(old)).schema_version == 1
    newer_minor = old | {"schema_version": SCHEMA_VERSION, "added_later": True}
    assert IdempotencyEntry.model_validate_json(json.dumps(newer_minor)).model_extra == {"added_later": True}
    with pytest.raises(RecordTooNew) as raised:
        IdempotencyEntry.model_validate_json(json.dumps(old | {"schema_version": SCHEMA_VERSION + 1}))
    assert (raised.value.code, raised.value.status) == ("RECORD_TOO_NEW", 503)
    assert "IdempotencyEntry r1 has schema version 2" in raised.value.message


def test_known_fields_leaves_out_unknown_fields_at_every_level() -> None:
    pointer = DefinitionPointer.model_validate(
        {"name": "n", "x": 1, "versions": [{"version": "1", "created_at": "2026-01-01T00:00:00Z", "y": 2}]}
    )
    shown = known_fields(pointer)
    assert "x" not in shown.model_dump() and "y" not in shown.model_dump()["versions"][0]
    assert pointer.model_dump()["versions"][0]["y"] == 2  # the record itself is unchanged


def test_an_implied_gpu_count_is_not_a_given_one() -> None:
    # A VRAM override of a two-GPU definition keeps its two GPUs (before: the implied 1 counted as given).
    assert Constraints(vram_mb=100).model_fields_set == {"vram_mb"}
    definition = RunTemplate.model_validate({"image": "i", "constraints": {"vram_mb": 8000, "gpus": 2}})
    overrides = RunFromDefinitionIn.model_validate_json('{"constraints": {"vram_mb": 16000}}')
    assert _with_overrides(definition, overrides).constraints.gpus == 2
    no_gpu = RunTemplate.model_validate({"image": "i"})
    assert _with_overrides(no_gpu, overrides).constraints.gpus == 1
