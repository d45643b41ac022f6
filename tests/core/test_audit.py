"""Canonical JSON, the hash chain and verification."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import JsonValue

from hoop_mcp.core.audit import (
    GENESIS_HASH,
    AuditRecord,
    canonical_json,
    chain,
    record_body,
    seal,
    verify_records,
    verify_stored,
)
from hoop_mcp.core.models import (
    AuditEvent,
    Confirmation,
    Decision,
    Outcome,
    OutcomeStatus,
    Plan,
    Principal,
    Verdict,
)

# Strategies (also used by tests/stores/test_sqlite_audit.py).

text = st.text(max_size=12)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.é☃", min_size=1, max_size=10)
offsets = st.integers(min_value=-12 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC) | offsets
)
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values: st.SearchStrategy[JsonValue] = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=8,
)
principals = st.builds(
    Principal,
    subject=names,
    issuer=names,
    groups=st.lists(names, max_size=2).map(tuple),
    name=st.none() | text,
    email=st.none() | names,
    unsafe_static=st.booleans(),
)
plans = st.builds(
    Plan,
    effect=names,
    effects=st.lists(names, max_size=2).map(tuple),
    command=text,
    relations_read=st.lists(names, max_size=2).map(tuple),
    flags=st.lists(names, max_size=2).map(tuple),
    statement=st.none() | text,
    estimate=st.none() | st.dictionaries(names, json_values, max_size=2),
)
decisions = st.builds(
    Decision, verdict=st.sampled_from(Verdict), rule_id=names, reason=text, matched=st.lists(names).map(tuple)
)
confirmations = st.builds(
    Confirmation, accepted=st.booleans(), action=names, comment=st.none() | text, at=times
)
outcomes = st.builds(
    Outcome,
    status=st.sampled_from(OutcomeStatus),
    rule_id=st.none() | names,
    reason=st.none() | text,
    row_count=st.none() | st.integers(min_value=0, max_value=10**9),
    truncated=st.booleans(),
    redactions=st.dictionaries(names, st.integers(min_value=0, max_value=100), max_size=3),
)
events = st.builds(
    AuditEvent,
    kind=st.sampled_from(["intent", "outcome"]),
    call_id=names,
    session_id=names,
    time=times,
    principal=st.none() | principals,
    tool=names,
    connection=st.none() | names,
    arguments=st.dictionaries(text, json_values, max_size=3),
    arguments_digest=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    plan=st.none() | plans,
    decision=st.none() | decisions,
    confirmation=st.none() | confirmations,
    outcome=st.none() | outcomes,
    duration_ms=st.none() | st.floats(min_value=0, max_value=1e7),
)

chains = st.lists(events, min_size=1, max_size=6)


def make_chain(evs: list[AuditEvent]) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    for event in evs:
        records.append(chain(records[-1] if records else None, event))
    return records


def head_of(records: list[AuditRecord]) -> tuple[int, str]:
    return (records[-1].seq, records[-1].hash) if records else (0, GENESIS_HASH)


def event(call_id: str = "c1", **kw: Any) -> AuditEvent:
    return AuditEvent(
        kind="intent",
        call_id=call_id,
        session_id="s1",
        tool="pg_query",
        arguments_digest="0" * 64,
        time=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        **kw,
    )


# ------------------------------------------------------------------------------------ canonical


def test_canonical_json_sorts_keys_and_has_no_whitespace() -> None:
    assert (
        canonical_json({"b": 1, "a": [1, 2, {"d": None, "c": True}]})
        == b'{"a":[1,2,{"c":true,"d":null}],"b":1}'
    )


def test_canonical_json_writes_non_ascii_as_utf8() -> None:
    assert canonical_json({"k": "café ☃"}) == '{"k":"café ☃"}'.encode()


def test_canonical_json_writes_datetimes_in_utc_with_microseconds_and_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert canonical_json(datetime(2024, 5, 1, 14, 0, tzinfo=plus_two)) == b'"2024-05-01T12:00:00.000000Z"'
    assert canonical_json(datetime(2024, 5, 1, 12, 0, 0, 7, tzinfo=UTC)) == b'"2024-05-01T12:00:00.000007Z"'


def test_canonical_json_pads_years_before_1000() -> None:
    assert canonical_json(datetime(5, 1, 1, tzinfo=UTC)) == b'"0005-01-01T00:00:00.000000Z"'


def test_canonical_json_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        canonical_json({"t": datetime(2024, 5, 1, 12, 0)})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_canonical_json_rejects_nan_and_infinity(value: float) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        canonical_json({"x": [value]})


def test_canonical_json_rejects_unsupported_types() -> None:
    with pytest.raises(TypeError, match="set"):
        canonical_json({"x": {1, 2}})


def test_canonical_json_rejects_lone_surrogates() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        canonical_json("\udc80")


@given(st.dictionaries(st.text(max_size=5), json_values, max_size=6), st.randoms())
def test_canonical_json_does_not_depend_on_insertion_order(value: dict[str, Any], rnd: Any) -> None:
    items = list(value.items())
    rnd.shuffle(items)
    assert canonical_json(dict(items)) == canonical_json(value)


@given(json_values)
def test_canonical_json_round_trips_through_a_json_parser(value: Any) -> None:
    assert json.loads(canonical_json(value)) == value


@given(events, st.integers(min_value=1, max_value=2**40), st.text(max_size=40), st.text(max_size=70))
def test_record_body_is_canonical_json_of_the_hashed_fields(
    ev: AuditEvent, seq: int, record_id: str, prev_hash: str
) -> None:
    expected = canonical_json({"seq": seq, "record_id": record_id, "prev_hash": prev_hash, "event": ev})
    assert (
        record_body(seq=seq, record_id=record_id, prev_hash=prev_hash, event_json=canonical_json(ev))
        == expected
    )


@given(events)
def test_record_hash_is_sha256_of_canonical_json(ev: AuditEvent) -> None:
    record = chain(None, ev)
    fields = {"seq": 1, "record_id": record.record_id, "prev_hash": GENESIS_HASH, "event": ev}
    assert record.hash == hashlib.sha256(canonical_json(fields)).hexdigest()


@given(events)
def test_a_record_survives_a_json_round_trip_and_still_verifies(ev: AuditEvent) -> None:
    record = chain(None, ev)
    again = AuditRecord.model_validate_json(canonical_json(record))
    assert again == record
    assert verify_records([again]).ok


# ---------------------------------------------------------------------------------------- chain


def test_chain_starts_at_seq_1_from_the_genesis_hash_and_links_each_record() -> None:
    records = make_chain([event("a"), event("b"), event("c")])
    assert [r.seq for r in records] == [1, 2, 3]
    assert records[0].prev_hash == GENESIS_HASH
    assert [r.prev_hash for r in records[1:]] == [r.hash for r in records[:-1]]
    assert len({r.record_id for r in records}) == 3


def test_an_intact_chain_verifies_and_reports_its_head() -> None:
    records = make_chain([event("a"), event("b")])
    report = verify_records(records, expected_head=head_of(records))
    assert report.ok
    assert (report.count, report.first_bad_seq, report.problem, report.head_hash) == (
        2,
        None,
        None,
        records[1].hash,
    )


def test_an_empty_chain_verifies_with_the_genesis_head() -> None:
    report = verify_records([], expected_head=(0, GENESIS_HASH))
    assert report.ok
    assert (report.count, report.head_hash) == (0, GENESIS_HASH)


# ------------------------------------------------------------------------------------- tampering


def _leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every editable place: leaves, plus containers (for dropping an element)."""
    paths: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list | tuple):
        items = list(enumerate(value))
    else:
        return [] if value is None else [path]
    if items:
        paths.append((*path, "<drop>"))
    for key, child in items:
        paths.extend(_leaf_paths(child, (*path, key)))
    return paths


_ENUMS = {
    "intent": "outcome",
    "outcome": "intent",
    "allow": "deny",
    "deny": "confirm",
    "confirm": "allow",
    "ok": "error",
    "error": "ok",
    "denied": "ok",
    "declined": "ok",
    "invalid": "ok",
    "withheld": "ok",
}


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 1.0 if abs(value) < 1e15 else value / 2
    if isinstance(value, datetime):
        return value + timedelta(microseconds=1)
    if isinstance(value, str):
        return _ENUMS.get(value, value + "x")
    raise AssertionError(type(value))


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _lists(child) for key, child in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(child) for child in value]
    return value


def _edit(record: AuditRecord, path: tuple[Any, ...]) -> AuditRecord:
    data = _lists(record.model_dump())
    parent: Any = data
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if last == "<drop>":
        container: Any = parent
        if isinstance(container, dict):
            del container[sorted(container)[0]]
        else:
            container.pop()
    else:
        parent[last] = _changed(parent[last])
    return AuditRecord.model_validate(data)


@settings(max_examples=300)
@given(chains, st.data())
def test_any_single_edit_of_any_field_is_found_at_that_record(
    evs: list[AuditEvent], data: st.DataObject
) -> None:
    records = make_chain(evs)
    index = data.draw(st.integers(min_value=0, max_value=len(records) - 1), label="index")
    paths = [
        p
        for p in _leaf_paths(records[index].model_dump())
        if p[:2] != ("event", "confirmation") or "method" not in p
    ]
    path = data.draw(st.sampled_from(paths), label="path")
    try:
        edited = _edit(records[index], path)
    except ValueError:  # the edit is not a valid record (e.g. a Literal); not a meaningful tamper
        assume(False)
        raise
    assume(edited != records[index])
    tampered = [*records[:index], edited, *records[index + 1 :]]
    report = verify_records(tampered, expected_head=head_of(records))
    assert not report.ok
    assert report.first_bad_seq == index + 1
    assert report.count == index
    assert (report.problem or "").startswith(f"record {index + 1} was edited (hash mismatch")


@given(chains.filter(lambda e: len(e) >= 2), st.data())
def test_deleting_a_record_is_found_at_its_seq(evs: list[AuditEvent], data: st.DataObject) -> None:
    records = make_chain(evs)
    index = data.draw(st.integers(min_value=0, max_value=len(records) - 2))
    report = verify_records([*records[:index], *records[index + 1 :]])
    assert report.first_bad_seq == index + 1
    assert report.count == index
    assert report.problem is not None
    assert report.problem.startswith(f"record {index + 1} is missing")


def test_a_gap_message_names_the_missing_record_and_its_predecessor() -> None:
    records = make_chain([event(str(i)) for i in range(20)])
    report = verify_records([*records[:17], *records[18:]])
    assert report.problem == "record 18 is missing (gap after 17, next is 19)"


def test_dropping_several_records_names_the_whole_gap() -> None:
    records = make_chain([event(str(i)) for i in range(6)])
    report = verify_records([records[0], records[4], records[5]])
    assert (report.first_bad_seq, report.problem) == (2, "records 2-4 are missing (gap after 1, next is 5)")


def test_dropping_the_first_record_is_found() -> None:
    records = make_chain([event("a"), event("b")])
    report = verify_records(records[1:])
    assert (report.first_bad_seq, report.problem) == (1, "record 1 is missing (the log starts at seq 2)")


@given(chains)
def test_tail_truncation_passes_the_chain_alone_but_not_the_head(evs: list[AuditEvent]) -> None:
    records = make_chain(evs)
    truncated = records[:-1]
    assert verify_records(truncated).ok
    report = verify_records(truncated, expected_head=head_of(records))
    assert not report.ok
    assert report.first_bad_seq == len(records)
    assert "missing at the tail" in (report.problem or "")


@given(chains.filter(lambda e: len(e) >= 2), st.data())
def test_any_reordering_is_found_at_the_first_moved_record(
    evs: list[AuditEvent], data: st.DataObject
) -> None:
    records = make_chain(evs)
    order = data.draw(st.permutations(range(len(records))))
    assume(order != list(range(len(records))))
    report = verify_records([records[i] for i in order])
    first_moved = next(k for k, i in enumerate(order) if i != k)
    assert report.first_bad_seq == first_moved + 1
    assert report.problem is not None
    assert report.problem.startswith(f"records out of order at {first_moved + 1}")


@given(chains.filter(lambda e: len(e) >= 2), st.data())
def test_swapping_two_records_is_found_at_the_earlier_one(evs: list[AuditEvent], data: st.DataObject) -> None:
    records = make_chain(evs)
    i = data.draw(st.integers(min_value=0, max_value=len(records) - 2))
    j = data.draw(st.integers(min_value=i + 1, max_value=len(records) - 1))
    swapped = list(records)
    swapped[i], swapped[j] = swapped[j], swapped[i]
    report = verify_records(swapped)
    assert report.first_bad_seq == i + 1
    assert report.problem == f"records out of order at {i + 1} (found seq {j + 1})"


def test_a_duplicated_record_is_found() -> None:
    records = make_chain([event("a"), event("b"), event("c")])
    report = verify_records([records[0], records[1], records[1], records[2]])
    assert (report.first_bad_seq, report.problem) == (3, "records out of order at 3 (found seq 2)")


def test_a_forged_record_with_a_recomputed_hash_breaks_the_link_to_the_next_record() -> None:
    records = make_chain([event("a"), event("b"), event("c")])
    forged, _ = seal(seq=2, prev_hash=records[0].hash, event=event("evil"), record_id=records[1].record_id)
    report = verify_records([records[0], forged, records[2]])
    assert (report.first_bad_seq, report.problem) == (
        3,
        "record 3 does not chain to record 2 (prev_hash mismatch)",
    )


def test_a_forged_last_record_is_found_by_the_head() -> None:
    records = make_chain([event("a"), event("b")])
    forged = chain(records[0], event("evil"))
    report = verify_records([records[0], forged], expected_head=head_of(records))
    assert (report.first_bad_seq, report.problem) == (
        2,
        "record 2 does not match the head (head hash mismatch)",
    )


def test_a_first_record_not_starting_from_genesis_is_found() -> None:
    forged, _ = seal(seq=1, prev_hash="f" * 64, event=event())
    report = verify_records([forged])
    assert (report.first_bad_seq, report.problem) == (
        1,
        "record 1 does not start from the genesis hash (prev_hash mismatch)",
    )


def test_records_beyond_the_head_are_reported() -> None:
    records = make_chain([event("a"), event("b")])
    report = verify_records(records, expected_head=head_of(records[:1]))
    assert (report.ok, report.first_bad_seq) == (False, 2)


def test_a_record_whose_event_lost_its_canonical_form_counts_as_edited() -> None:
    records = make_chain([event("a")])
    broken = records[0].model_copy(update={"event": event("a", duration_ms=math.nan)})
    report = verify_records([broken])
    assert (report.first_bad_seq, report.problem) == (
        1,
        "record 1 was edited (its event has no canonical form)",
    )


# -------------------------------------------------------------------------------- stored bytes


def _stored(evs: list[AuditEvent]) -> tuple[list[AuditRecord], list[tuple[bytes, str]]]:
    records: list[AuditRecord] = []
    rows: list[tuple[bytes, str]] = []
    prev = GENESIS_HASH
    for seq, ev in enumerate(evs, start=1):
        record, body = seal(seq=seq, prev_hash=prev, event=ev)
        records.append(record)
        rows.append((body, record.hash))
        prev = record.hash
    return records, rows


@given(chains)
def test_verify_stored_accepts_what_verify_records_accepts(evs: list[AuditEvent]) -> None:
    records, rows = _stored(evs)
    assert verify_stored(rows, expected_head=head_of(records)) == verify_records(
        records, expected_head=head_of(records)
    )


@given(chains, st.data())
def test_verify_stored_finds_any_changed_byte(evs: list[AuditEvent], data: st.DataObject) -> None:
    _records, rows = _stored(evs)
    index = data.draw(st.integers(min_value=0, max_value=len(rows) - 1))
    body, digest = rows[index]
    at = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    flipped = body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1 :]
    rows[index] = (flipped, digest)
    report = verify_stored(rows)
    assert report.first_bad_seq == index + 1


@given(chains.filter(lambda e: len(e) >= 2), st.data())
def test_verify_stored_finds_deletions_and_swaps(evs: list[AuditEvent], data: st.DataObject) -> None:
    _records, rows = _stored(evs)
    i = data.draw(st.integers(min_value=0, max_value=len(rows) - 2))
    assert verify_stored([*rows[:i], *rows[i + 1 :]]).first_bad_seq == i + 1
    rows[i], rows[i + 1] = rows[i + 1], rows[i]
    assert verify_stored(rows).problem == f"records out of order at {i + 1} (found seq {i + 2})"


def test_verify_stored_reports_an_unreadable_body() -> None:
    _records, rows = _stored([event("a"), event("b")])
    rows[1] = (b"not json", hashlib.sha256(b"not json").hexdigest())
    report = verify_stored(rows)
    assert (report.first_bad_seq, report.problem) == (
        2,
        "record 2 is unreadable (stored body is not a canonical record)",
    )
