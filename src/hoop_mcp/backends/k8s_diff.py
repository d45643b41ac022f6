"""What a server-side apply changes: the live object against the server's dry-run answer.

Both sides are normalised first (server bookkeeping such as ``managedFields``, ``resourceVersion``
and ``status`` is dropped), the diff is computed on the real values, and only the *rendering* uses
masked copies: so a changed Secret value shows as changed without ever being shown.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hoop_mcp.backends.k8s_mask import mask_object

#: Metadata the server owns; never part of a plan.
_VOLATILE_METADATA = (
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
)
#: Lines of a rendered diff per object before it is cut.
MAX_LINES_PER_OBJECT = 60
_VALUE_CHARS = 120

Path = tuple[str | int, ...]
Action = Literal["create", "change", "unchanged"]


def normalise(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A copy without server bookkeeping (what a plan compares and binds to)."""
    if obj is None:
        return None
    out = copy.deepcopy(dict(obj))
    out.pop("status", None)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        for key in _VOLATILE_METADATA:
            meta.pop(key, None)
    return out


def leaves(value: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every leaf (scalar, empty list, empty mapping) with its path."""
    if isinstance(value, dict) and value:
        for key in sorted(value):
            yield from leaves(value[key], (*path, str(key)))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index))
    else:
        yield path, value


_MISSING = object()


def _at(value: Any, path: Path) -> Any:
    for part in path:
        if isinstance(part, int):
            if not (isinstance(value, list) and 0 <= part < len(value)):
                return _MISSING
            value = value[part]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return _MISSING
    return value


@dataclass(frozen=True, slots=True)
class ObjectDiff:
    """One object's planned change. ``before``/``after`` are normalised, unmasked: never shown."""

    label: str
    kind: str
    action: Action
    before: dict[str, Any] | None
    after: dict[str, Any]
    changed: tuple[Path, ...]

    def digest(self) -> str:
        data = json.dumps(
            {"label": self.label, "action": self.action, "before": self.before, "after": self.after},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(data.encode("utf-8")).hexdigest()


def diff_object(
    *, label: str, kind: str, live: Mapping[str, Any] | None, dry_run: Mapping[str, Any]
) -> ObjectDiff:
    before = normalise(live)
    after = normalise(dry_run) or {}
    if before is None:
        return ObjectDiff(label, kind, "create", None, after, tuple(p for p, _ in leaves(after)))
    old = dict(leaves(before))
    new = dict(leaves(after))
    changed = tuple(
        sorted(
            (p for p in old.keys() | new.keys() if old.get(p, _MISSING) != new.get(p, _MISSING)),
            key=_sort_key,
        )
    )
    return ObjectDiff(label, kind, "change" if changed else "unchanged", before, after, changed)


def _sort_key(path: Path) -> tuple[tuple[int, str], ...]:
    return tuple((0, f"{p:08d}") if isinstance(p, int) else (1, p) for p in path)


def path_text(path: Path, obj: Any = None) -> str:
    """``spec.template.spec.containers[name=web].image`` (lists of named items keyed by name)."""
    out = ""
    current = obj
    for part in path:
        if isinstance(part, int):
            item = current[part] if isinstance(current, list) and 0 <= part < len(current) else None
            name = item.get("name") if isinstance(item, dict) else None
            out += f"[name={name}]" if isinstance(name, str) and name else f"[{part}]"
        else:
            out += ("." if out else "") + (
                part if part.replace("-", "").replace("_", "").isalnum() else json.dumps(part)
            )
        current = _at(current, (part,)) if current is not None else None
        if current is _MISSING:
            current = None
    return out


def _value_text(value: Any) -> str:
    if value is _MISSING:
        return "(absent)"
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"


def render_diff(diff: ObjectDiff, *, max_lines: int = MAX_LINES_PER_OBJECT) -> list[str]:
    """The readable diff of one object; values come from masked copies only."""
    after = mask_object(diff.after)
    before = mask_object(diff.before) if diff.before is not None else None
    if diff.action == "create":
        head = f"+ {diff.label} (create)"
    elif diff.action == "change":
        head = f"~ {diff.label} ({len(diff.changed)} field(s) change)"
    else:
        return [f"= {diff.label} (unchanged)"]
    lines = [head]
    for path in diff.changed[:max_lines]:
        shown = path_text(path, diff.after if _at(diff.after, path) is not _MISSING else diff.before)
        new = _at(after, path)
        if before is None:
            lines.append(f"    {shown}: {_value_text(new)}")
            continue
        old = _at(before, path)
        note = " (changed)" if _value_text(old) == _value_text(new) else ""
        lines.append(f"    {shown}: {_value_text(old)} -> {_value_text(new)}{note}")
    if len(diff.changed) > max_lines:
        lines.append(f"    ... and {len(diff.changed) - max_lines} more field(s)")
    return lines
