"""Tamper-evident audit log: canonical JSON, the hash chain, verification and the store protocol.

Every :class:`~hoop_mcp.core.models.AuditEvent` is sealed into an :class:`AuditRecord`::

    hash = sha256(canonical_json({"seq": ..., "record_id": ..., "prev_hash": ..., "event": ...}))

``seq`` is 1-based and contiguous, ``prev_hash`` is the previous record's ``hash`` (64 zeros for the
first record). Editing any field of any record, dropping a record, or reordering records breaks
the chain at a point :func:`verify_records` names.

What the chain alone cannot show is *truncation at the tail*: the remaining prefix is a valid
chain. Stores therefore keep the head (``seq`` + ``hash`` of the last record) separately, updated in
the same transaction as the append, and verification compares the chain's end with it. Someone
with write access to the store can rewrite records *and* head consistently (or rewrite the whole
chain); only signed checkpoints (a digest over the head, signed with a key the writer cannot
reach, as AWS CloudTrail does) close that gap. They are planned, not implemented.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from pydantic import BaseModel, Field

from hoop_mcp.core.models import AuditEvent, FrozenModel

__all__ = [
    "GENESIS_HASH",
    "AuditLog",
    "AuditRecord",
    "SessionSummary",
    "VerifyReport",
    "canonical_json",
    "chain",
    "record_body",
    "seal",
    "verify_records",
    "verify_stored",
]

#: ``prev_hash`` of the first record.
GENESIS_HASH = "0" * 64


# --------------------------------------------------------------------------------------------------
# Canonical JSON
# --------------------------------------------------------------------------------------------------


def _canonical_default(value: object) -> object:
    if isinstance(value, datetime):
        offset = value.utcoffset()
        if offset is None:
            raise ValueError(f"naive datetime {value.isoformat()} has no time zone; refusing to guess")
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    if isinstance(value, BaseModel):
        return value.model_dump(mode="python")
    raise TypeError(f"{type(value).__name__} has no canonical JSON form")


_ENCODER = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,
    default=_canonical_default,
)


def canonical_json(value: object) -> bytes:
    """Encode ``value`` as canonical JSON, the exact bytes the audit hash chain is computed over.

    The encoding is deterministic, and verification depends on every detail of it:

    * UTF-8 bytes, no BOM; non-ASCII characters are written as themselves (no ``\\u`` escapes),
      except what JSON requires escaping (``"``, ``\\`` and control characters).
    * Object keys sorted by code point; no whitespace at all (``,`` and ``:`` separators).
    * Tuples are arrays; pydantic models are encoded as their ``model_dump()`` (every field, with
      ``null`` for unset optional fields, enums as their values).
    * ``datetime`` values become RFC 3339 strings in UTC with exactly six fractional digits and a
      ``Z`` suffix (``2024-05-01T12:00:00.000000Z``). Naive datetimes are rejected (``ValueError``).
    * Floats use Python's shortest round-trip ``repr`` (``3.2``, ``1e+16``); ``NaN`` and
      ``±Infinity`` are rejected (``ValueError``).
    * Object keys must be strings (JSON would silently coerce others; do not use them).

    Raises ``ValueError`` for values with no canonical form (NaN, naive datetimes, unencodable
    strings such as lone surrogates, circular structures) and ``TypeError`` for unsupported types.
    """
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="python")
    try:
        text = _ENCODER.encode(value)
    except RecursionError as exc:  # check_circular=False turns cycles into deep recursion
        raise ValueError("circular or too deeply nested value") from exc
    return text.encode("utf-8")  # UnicodeEncodeError (a ValueError) for lone surrogates


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------


class AuditRecord(FrozenModel):
    """One sealed event in the chain."""

    #: 1-based, contiguous position in the log.
    seq: int = Field(ge=1)
    #: Random identifier (uuid4 hex), unique across logs; lets exports be cross-referenced.
    record_id: str
    #: ``hash`` of the previous record, hex sha256; :data:`GENESIS_HASH` for ``seq == 1``.
    prev_hash: str
    #: Hex sha256 of :func:`record_body` (``canonical_json`` of seq, record_id, prev_hash, event).
    hash: str
    event: AuditEvent


class VerifyReport(FrozenModel):
    """The result of verifying a chain."""

    ok: bool
    #: Records that verified, in order, before the first problem (all of them when ``ok``).
    count: int
    #: The sequence number where the chain first fails; ``None`` when ``ok``.
    first_bad_seq: int | None = None
    #: Human-readable explanation, e.g. ``record 17 was edited (hash mismatch)``.
    problem: str | None = None
    #: Hash of the last record that verified (:data:`GENESIS_HASH` if none did).
    head_hash: str = GENESIS_HASH


class SessionSummary(FrozenModel):
    """One agent session as seen in the log (for ``hoop-mcp replay`` listings)."""

    session_id: str
    first_time: datetime
    last_time: datetime
    #: ``Principal.label`` of the first record in the session that names a principal.
    principal: str | None = None
    #: Distinct tool calls (``call_id``) in the session.
    call_count: int
    record_count: int


def _json_str(value: str) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def record_body(*, seq: int, record_id: str, prev_hash: str, event_json: bytes) -> bytes:
    """The bytes a record's hash covers, given the event's canonical JSON.

    Equal to ``canonical_json({"seq": seq, "record_id": record_id, "prev_hash": prev_hash,
    "event": event})`` (keys sorted: event, prev_hash, record_id, seq), without encoding the event
    twice. Stores keep exactly these bytes.
    """
    if type(seq) is not int:  # bool or int subclasses would encode differently
        seq = int(seq)
    return b'{"event":%b,"prev_hash":%b,"record_id":%b,"seq":%d}' % (
        event_json,
        _json_str(prev_hash),
        _json_str(record_id),
        seq,
    )


def seal(
    *, seq: int, prev_hash: str, event: AuditEvent, record_id: str | None = None
) -> tuple[AuditRecord, bytes]:
    """Seal ``event`` at ``seq`` after ``prev_hash``; returns the record and its hashed body.

    Raises ``ValueError`` / ``TypeError`` when the event has no canonical form (see
    :func:`canonical_json`).
    """
    rid = uuid.uuid4().hex if record_id is None else record_id
    body = record_body(seq=seq, record_id=rid, prev_hash=prev_hash, event_json=canonical_json(event))
    digest = hashlib.sha256(body).hexdigest()
    return AuditRecord(seq=seq, record_id=rid, prev_hash=prev_hash, hash=digest, event=event), body


def chain(prev: AuditRecord | None, event: AuditEvent, *, record_id: str | None = None) -> AuditRecord:
    """The record that follows ``prev`` (or the first record when ``prev`` is ``None``)."""
    if prev is None:
        return seal(seq=1, prev_hash=GENESIS_HASH, event=event, record_id=record_id)[0]
    return seal(seq=prev.seq + 1, prev_hash=prev.hash, event=event, record_id=record_id)[0]


# --------------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------------

#: What one step of verification learns about an item: (seq, prev_hash, hash, hash_ok), or a
#: problem text when the item cannot even be read.
_Link = tuple[int, str, str, bool]
_T = TypeVar("_T")


def _walk(
    items: Iterator[_T],
    link: Callable[[_T], _Link | str],
    seq_of: Callable[[_T], int | None],
    expected_head: tuple[int, str] | None,
    *,
    expected: int = 1,
    prev_hash: str = GENESIS_HASH,
) -> VerifyReport:
    for item in items:
        info = link(item)
        if isinstance(info, str):
            return _bad(expected, prev_hash, f"record {expected} {info}")
        seq, claimed_prev, digest, hash_ok = info
        if not hash_ok:
            claim = "" if seq == expected else f"; it claims seq {seq}"
            return _bad(expected, prev_hash, f"record {expected} was edited (hash mismatch{claim})")
        if seq == expected:
            if claimed_prev != prev_hash:
                if expected == 1:
                    text = "record 1 does not start from the genesis hash (prev_hash mismatch)"
                else:
                    text = f"record {expected} does not chain to record {expected - 1} (prev_hash mismatch)"
                return _bad(expected, prev_hash, text)
            expected += 1
            prev_hash = digest
            continue
        if seq > expected and not any(seq_of(rest) == expected for rest in items):
            missing = f"record {expected} is" if seq == expected + 1 else f"records {expected}-{seq - 1} are"
            where = "the log starts at seq" if expected == 1 else f"gap after {expected - 1}, next is"
            return _bad(expected, prev_hash, f"{missing} missing ({where} {seq})")
        return _bad(expected, prev_hash, f"records out of order at {expected} (found seq {seq})")
    count = expected - 1
    if expected_head is not None:
        head_seq, head_hash = expected_head
        if head_seq > count:
            missing = (
                f"record {head_seq} is" if head_seq == count + 1 else f"records {count + 1}-{head_seq} are"
            )
            return _bad(
                count + 1,
                prev_hash,
                f"{missing} missing at the tail (the head says the log ends at {head_seq})",
            )
        if head_seq < count:
            return _bad(
                head_seq + 1,
                prev_hash,
                f"the log continues past its head: head says {head_seq}, records run to {count}",
                count=head_seq,
            )
        if head_hash != prev_hash:
            return _bad(
                count,
                prev_hash,
                f"record {count} does not match the head (head hash mismatch)",
                count=count - 1,
            )
    return VerifyReport(ok=True, count=count, head_hash=prev_hash)


def _bad(seq: int, head_hash: str, problem: str, *, count: int | None = None) -> VerifyReport:
    return VerifyReport(
        ok=False,
        count=seq - 1 if count is None else count,
        first_bad_seq=seq,
        problem=problem,
        head_hash=head_hash,
    )


def _record_link(item: AuditRecord) -> _Link | str:
    try:
        event_json = canonical_json(item.event)
    except (ValueError, TypeError):
        return "was edited (its event has no canonical form)"
    body = record_body(
        seq=item.seq, record_id=item.record_id, prev_hash=item.prev_hash, event_json=event_json
    )
    return item.seq, item.prev_hash, item.hash, hashlib.sha256(body).hexdigest() == item.hash


def _record_seq(item: AuditRecord) -> int | None:
    return item.seq


def verify_records(
    records: Iterable[AuditRecord], *, expected_head: tuple[int, str] | None = None
) -> VerifyReport:
    """Verify a chain of records, in the order given, starting at seq 1.

    Recomputes every hash from the records' content (canonical JSON), so any edit to any field is
    found; also finds gaps (dropped records), reordering and duplicates, and reports the first
    sequence number where the chain breaks. An edited record whose hash was *recomputed* verifies
    on its own and is caught at the next record (``does not chain``).

    ``expected_head`` is the (seq, hash) a store recorded for its last record; with it, truncation
    at the tail is found too. Without it, a valid prefix of a chain verifies.

    Streams: memory stays constant unless a gap is found (then the rest is scanned to tell a gap
    from a reorder).
    """
    return _walk(iter(records), _record_link, _record_seq, expected_head)


_TAIL = re.compile(rb',"prev_hash":"([0-9a-f]{64})","record_id":"(?:[^"\\]|\\.)*","seq":([1-9][0-9]*)\}')


def _parse_tail(body: bytes) -> tuple[int, str] | None:
    cut = body.rfind(b',"prev_hash":"')
    match = _TAIL.fullmatch(body, cut) if cut > 0 else None
    if match is None:
        return None
    return int(match.group(2)), match.group(1).decode("ascii")


def _stored_link(item: tuple[bytes, str]) -> _Link | str:
    body, digest = item
    tail = _parse_tail(body)
    if tail is None:
        return "is unreadable (stored body is not a canonical record)"
    return tail[0], tail[1], digest, hashlib.sha256(body).hexdigest() == digest


def _stored_seq(item: tuple[bytes, str]) -> int | None:
    tail = _parse_tail(item[0])
    return None if tail is None else tail[0]


def verify_stored(
    rows: Iterable[tuple[bytes, str]], *, expected_head: tuple[int, str] | None = None
) -> VerifyReport:
    """Verify a chain from its stored form: ``(body, hash)`` pairs, ``body`` being :func:`record_body`.

    Equivalent to :func:`verify_records` for bodies a store wrote, but hashes the stored bytes
    instead of re-encoding models, which is several times faster. Sound because the chain
    authenticates the bytes: ``seq`` and ``prev_hash`` are read from the hashed body itself, and
    changing any byte changes the hash. It does not check that a body decodes to a valid
    :class:`AuditEvent`; :func:`verify_records` over the parsed records does.
    """
    it = iter(rows)
    expected = 1
    prev_hash = GENESIS_HASH
    sha256 = hashlib.sha256
    # Fast path: accept a row only when its hash matches and its tail reads exactly
    # `,"prev_hash":"<prev>","record_id":"...","seq":<expected>}`; anything else goes to _walk,
    # which re-examines that row (and the rest) and explains the problem.
    for row in it:
        body, digest = row
        cut = body.rfind(b',"prev_hash":"')
        if (
            sha256(body).hexdigest() == digest
            and body.startswith(b',"prev_hash":"%b","record_id":"' % prev_hash.encode(), cut)
            and body.endswith(b'","seq":%d}' % expected)
        ):
            expected += 1
            prev_hash = digest
            continue
        rest = itertools.chain((row,), it)
        return _walk(rest, _stored_link, _stored_seq, expected_head, expected=expected, prev_hash=prev_hash)
    return _walk(iter(()), _stored_link, _stored_seq, expected_head, expected=expected, prev_hash=prev_hash)


# --------------------------------------------------------------------------------------------------
# Store protocol
# --------------------------------------------------------------------------------------------------


class AuditLog(Protocol):
    """Where audit records go. Implementations serialize appends into one contiguous chain.

    ``append`` returns only once the record is durable and raises
    :class:`~hoop_mcp.core.errors.AuditWriteError` otherwise: the pipeline then refuses to execute.
    """

    async def append(self, event: AuditEvent) -> AuditRecord: ...

    async def records(
        self,
        *,
        session_id: str | None = None,
        call_id: str | None = None,
        since_seq: int | None = None,
        limit: int | None = None,
    ) -> list[AuditRecord]:
        """Records in seq order, filtered; ``since_seq`` is exclusive (records after it)."""
        ...

    async def verify(self) -> VerifyReport: ...

    async def sessions(self) -> list[SessionSummary]: ...

    async def close(self) -> None: ...
