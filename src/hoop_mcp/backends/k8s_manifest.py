"""Parse a ``kubectl apply`` manifest the way kubectl and the API server read it.

The agent's YAML is never forwarded: it is read here into plain JSON-compatible objects
(:class:`KubeObject`), the checks inspect those, and exactly those are sent. So the reading must
match ``sigs.k8s.io/yaml`` (go-yaml v2, YAML 1.1 scalars) wherever the two could disagree, and
refuse where they cannot be made to agree (duplicate keys, merge-key precedence).

The YAML is read from libyaml's event stream (no recursion, no node graph): sizes, nesting depth,
alias uses and the size after alias expansion are all checked while reading, before any large
structure is built. JSON input (first character ``{``) is read as kubectl reads it, as a JSON
stream.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

import yaml
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)

from hoop_mcp.backends.k8s_objects import KubeObject
from hoop_mcp.core.errors import InvalidInput

__all__ = ["is_dns1123_label", "manifest_json", "parse_manifest"]

try:  # libyaml: fast and non-recursive.
    from yaml._yaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser as _PyParser
    from yaml.reader import Reader as _Reader
    from yaml.scanner import Scanner as _Scanner

    class _Parser(_Reader, _Scanner, _PyParser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            _Reader.__init__(self, stream)
            _Scanner.__init__(self)
            _PyParser.__init__(self)

        def dispose(self) -> None:
            pass


# ---------------------------------------------------------------------------------------------
# Errors


def _fail(rule: str, message: str, *, hint: str | None = None) -> NoReturn:
    raise InvalidInput(message, hint=hint, details={"rule_id": f"k8s.{rule}"})


def _quote(text: str, limit: int = 80) -> str:
    """A short, quoted rendering of user text for messages (never long input)."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return json.dumps(text, ensure_ascii=False)


def _at(mark: Any) -> str:
    if mark is None:
        return ""
    return f" at line {mark.line + 1}, column {mark.column + 1}"


# ---------------------------------------------------------------------------------------------
# Scalars, as go-yaml v2 resolves them (resolve.go) and sigs.k8s.io/yaml turns them into JSON.

_MERGE = object()  # the plain ``<<`` key
_NO_KEY = object()
_NON_FINITE = object()

_SPECIAL: dict[str, Any] = {"": None, "~": None, "null": None, "Null": None, "NULL": None}
for _word in ["y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE"]:
    _SPECIAL[_word] = True
for _word in ["n", "N", "no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE"]:
    _SPECIAL[_word] = False
for _word in [
    ".inf",
    ".Inf",
    ".INF",
    "+.inf",
    "+.Inf",
    "+.INF",
    "-.inf",
    "-.Inf",
    "-.INF",
    ".nan",
    ".NaN",
    ".NAN",
]:
    _SPECIAL[_word] = _NON_FINITE
del _word

# First characters for which go-yaml v2 tries anything but a string ('M' in map, 'D' digit,
# 'S' sign, '.' float). Every other first character means a plain string.
_HINT: dict[str, str] = {c: "M" for c in "yYnNtTfFoO~"}
_HINT.update({c: "D" for c in "0123456789"})
_HINT.update({"+": "S", "-": "S", ".": "."})

_INT_RE = re.compile(r"([-+]?)(?:0[xX]([0-9a-fA-F]+)|0[oO]([0-7]+)|0[bB]([01]+)|(0[0-7]*)|([1-9][0-9]*))")
_FLOAT_RE = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_DOT_FLOAT_RE = re.compile(r"\.[0-9]+(?:[eE][-+]?[0-9]+)?")
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def _number(value: float) -> int | float:
    """A float as Go's ``encoding/json`` writes it: integral values carry no fraction."""
    if value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _resolve_plain(text: str) -> Any:
    """An untagged plain scalar (go-yaml v2 ``resolve``); ``_NON_FINITE`` for inf/nan."""
    hint = _HINT.get(text[:1]) if text else "M"
    if hint is None:
        return text
    special = _SPECIAL.get(text, _NO_KEY)
    if special is not _NO_KEY:
        return special
    if hint == "M":
        return text
    if hint == ".":
        if _DOT_FLOAT_RE.fullmatch(text):
            return _number(float(text))
        return text
    plain = text.replace("_", "")
    m = _INT_RE.fullmatch(plain)
    if m is not None:
        sign, hexa, octal, binary, legacy_octal, decimal = m.groups()
        if decimal is not None:
            number = int(decimal)
        elif hexa is not None:
            number = int(hexa, 16)
        elif octal is not None:
            number = int(octal, 8)
        elif binary is not None:
            number = int(binary, 2)
        else:
            number = int(legacy_octal, 8)
        if sign == "-":
            number = -number
        if _INT64_MIN <= number <= _UINT64_MAX:
            return number
    if _FLOAT_RE.fullmatch(plain):
        value = float(plain)
        if math.isfinite(value):  # Go's ParseFloat fails on overflow: the scalar stays a string
            return _number(value)
    return text


_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_COLLECTION_TAGS = {None, "!", _TAG + "map", _TAG + "seq"}


def _resolve_tagged(tag: str, text: str, mark: Any) -> Any:
    """An explicitly tagged scalar: only the core JSON-like tags are accepted."""
    if tag in (_STR, "!"):
        return text
    if tag not in (_INT, _FLOAT, _BOOL, _NULL):
        _fail(
            "invalid_yaml",
            f"unsupported YAML tag {_quote(tag, 40)}{_at(mark)}",
            hint="only plain values and the tags !!str, !!int, !!float, !!bool and !!null are accepted",
        )
    value = _resolve_plain(text)
    if tag == _FLOAT and type(value) is int:
        return value
    expected = {_INT: int, _FLOAT: float, _BOOL: bool, _NULL: type(None)}[tag]
    if type(value) is not expected or value is _NON_FINITE:
        _fail("invalid_yaml", f"the value{_at(mark)} cannot be read as {tag[len(_TAG) :]}")
    return value


def _key_string(key: Any, mark: Any) -> str:
    """A mapping key as sigs.k8s.io/yaml writes it into JSON."""
    kind = type(key)
    if kind is str:
        return key  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if key else "false"
    if kind is int and _INT64_MIN <= key < 2**63:
        return str(key)
    what = {type(None): "null", dict: "a mapping", list: "a sequence"}.get(
        kind, "a number that is not an integer"
    )
    _fail(
        "invalid_yaml",
        f"a mapping key{_at(mark)} is {what}; Kubernetes object keys must be strings",
        hint="quote the key",
    )


# ---------------------------------------------------------------------------------------------
# YAML event reader


class _Frame:
    __slots__ = ("anchor", "container", "explicit", "height", "is_map", "key", "key_mark", "merged", "start")

    def __init__(self, container: Any, is_map: bool, anchor: str | None, start: int) -> None:
        self.container = container
        self.is_map = is_map
        self.anchor = anchor
        self.start = start  # expanded node count when the collection opened
        self.height = 0  # height of the tallest child
        self.key: Any = _NO_KEY
        self.key_mark: Any = None
        self.explicit: set[str] | None = set() if is_map else None
        self.merged = False


def _copy(value: Any) -> Any:
    if type(value) is dict:
        return {k: _copy(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy(v) for v in value]
    return value


def _path(stack: list[_Frame]) -> str:
    parts: list[str] = []
    for frame in stack:
        if frame.is_map:
            if isinstance(frame.key, str):
                parts.append(frame.key if not parts else "." + frame.key)
        else:
            parts.append(f"[{len(frame.container)}]")
    return _quote("".join(parts)) if parts else "the top level"


class _Limits:
    __slots__ = ("aliases", "depth", "documents", "nodes")

    def __init__(self, documents: int, depth: int, aliases: int, nodes: int) -> None:
        self.documents = documents
        self.depth = depth
        self.aliases = aliases
        self.nodes = nodes


def _read_yaml(text: str, limits: _Limits) -> list[tuple[int, Any]]:
    parser = _Parser(text)
    try:
        return _read_events(parser, limits)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if "nesting depth" in problem:  # libyaml's own limit (deeper than ours)
            _fail("too_deep", f"the manifest nests deeper than {limits.depth} levels{_at(mark)}")
        _fail("invalid_yaml", f"YAML syntax error{_at(mark)}: {problem[:160]}")
    except yaml.YAMLError as exc:
        _fail("invalid_yaml", f"YAML syntax error: {str(exc)[:160]}")
    finally:
        parser.dispose()


def _read_events(parser: Any, limits: _Limits) -> list[tuple[int, Any]]:
    get_event = parser.get_event
    documents: list[tuple[int, Any]] = []
    doc_no = 0
    nodes = 0  # nodes after alias expansion, whole manifest
    raw_nodes = 0
    alias_uses = 0
    max_nodes, max_depth = limits.nodes, limits.depth
    anchors: dict[str, tuple[Any, int, int]] = {}  # name -> (value, expanded size, height)
    open_anchors: set[str] = set()
    stack: list[_Frame] = []
    root: Any = None

    while True:
        event = get_event()
        cls = event.__class__
        value: Any
        height = 0
        if cls is ScalarEvent:
            nodes += 1
            raw_nodes += 1
            tag = event.tag
            if tag is None:
                if event.implicit[0]:
                    value = _resolve_plain(event.value)
                    if value == "<<" and stack and stack[-1].is_map and stack[-1].key is _NO_KEY:
                        value = _MERGE  # only a plain ``<<`` *key* merges
                else:
                    value = event.value
            else:
                value = _resolve_tagged(tag, event.value, event.start_mark)
            if value is _NON_FINITE:
                _fail(
                    "invalid_yaml",
                    f"a number{_at(event.start_mark)} is infinite or not-a-number, which JSON cannot carry",
                    hint="quote it if a string is meant",
                )
            if event.anchor is not None:
                anchors[event.anchor] = (value, 1, 0)
        elif cls is MappingStartEvent or cls is SequenceStartEvent:
            nodes += 1
            raw_nodes += 1
            if event.tag not in _COLLECTION_TAGS:
                _fail("invalid_yaml", f"unsupported YAML tag {_quote(event.tag, 40)}{_at(event.start_mark)}")
            if len(stack) >= max_depth:
                _fail(
                    "too_deep",
                    f"document {doc_no} nests deeper than {max_depth} levels{_at(event.start_mark)}",
                )
            is_map = cls is MappingStartEvent
            anchor = event.anchor
            if anchor is not None:
                open_anchors.add(anchor)
            stack.append(_Frame({} if is_map else [], is_map, anchor, nodes - 1))
            if nodes > max_nodes:
                _too_many_nodes(raw_nodes, max_nodes, alias_uses)
            continue
        elif cls is MappingEndEvent or cls is SequenceEndEvent:
            frame = stack.pop()
            value = frame.container
            height = frame.height + 1
            if frame.anchor is not None:
                open_anchors.discard(frame.anchor)
                anchors[frame.anchor] = (value, nodes - frame.start, height)
        elif cls is AliasEvent:
            name = event.anchor
            alias_uses += 1
            if alias_uses > limits.aliases:
                _fail(
                    "yaml_bomb",
                    f"the manifest uses more than {limits.aliases} YAML aliases",
                    hint="write the values out instead of repeating them with *aliases",
                )
            if name in open_anchors:
                _fail(
                    "yaml_bomb",
                    f"the alias *{_quote(name, 40)[1:-1]}{_at(event.start_mark)} refers to a node that contains it (recursive alias)",
                )
            found = anchors.get(name)
            if found is None:
                _fail("invalid_yaml", f"unknown alias *{_quote(name, 40)[1:-1]}{_at(event.start_mark)}")
            value, size, height = found
            nodes += size
            if nodes > max_nodes:
                _too_many_nodes(raw_nodes, max_nodes, alias_uses)
            if len(stack) + height > max_depth:
                _fail(
                    "too_deep",
                    f"document {doc_no} nests deeper than {max_depth} levels once aliases are expanded{_at(event.start_mark)}",
                )
            if height:
                value = _copy(value)
        elif cls is DocumentStartEvent:
            doc_no += 1
            if doc_no > limits.documents:
                _fail(
                    "too_many_documents",
                    f"the manifest has more than {limits.documents} YAML documents",
                    hint="split it into several smaller applies",
                )
            anchors = {}
            root = None
            continue
        elif cls is DocumentEndEvent:
            if root is not None:
                documents.append((doc_no, root))
            continue
        elif cls is StreamEndEvent:
            return documents
        elif cls is StreamStartEvent:
            continue
        else:  # pragma: no cover - libyaml emits no other events
            _fail("invalid_yaml", "unexpected YAML structure")

        if nodes > max_nodes:
            _too_many_nodes(raw_nodes, max_nodes, alias_uses)

        # Place the finished value into its parent.
        if not stack:
            root = value
            continue
        parent = stack[-1]
        if height > parent.height:
            parent.height = height
        if not parent.is_map:
            parent.container.append(value)
            continue
        if parent.key is _NO_KEY:
            if value is _MERGE:
                if parent.merged:
                    _fail(
                        "duplicate_key",
                        f"the merge key '<<' appears twice in one mapping{_at(event.start_mark)}",
                    )
                parent.key = _MERGE
            else:
                parent.key = _key_string(value, event.start_mark)
            parent.key_mark = event.start_mark
            continue
        key = parent.key
        parent.key = _NO_KEY
        container = parent.container
        explicit = parent.explicit
        assert explicit is not None  # noqa: S101 - mapping frames always have it
        if key is _MERGE:
            parent.merged = True
            _merge_into(container, explicit, value, parent.key_mark, stack)
            continue
        if key in explicit:
            parent.key = key  # for the path in the message
            _fail(
                "duplicate_key",
                f"document {doc_no}: the key {_quote(key)} appears twice in the same mapping{_at(parent.key_mark)} (at {_path(stack)})",
                hint="the API server rejects duplicate fields; keep one",
            )
        explicit.add(key)
        container[key] = value


def _too_many_nodes(raw_nodes: int, max_nodes: int, alias_uses: int) -> NoReturn:
    if raw_nodes > max_nodes or alias_uses == 0:
        _fail(
            "too_large",
            f"the manifest has more than {max_nodes} YAML nodes",
            hint="split it into smaller applies",
        )
    _fail(
        "yaml_bomb",
        f"the manifest expands to more than {max_nodes} YAML nodes once its aliases are expanded",
        hint="write the values out instead of repeating them with *aliases",
    )


def _merge_into(
    container: dict[str, Any], explicit: set[str], value: Any, mark: Any, stack: list[_Frame]
) -> None:
    """``<<: {..}`` or ``<<: [{..}, ..]``: earlier sources win, explicit keys win.

    go-yaml v2 (what kubectl uses) applies a merge in *order*, so a merge that comes after an
    explicit key of the same name would override it there while YAML (and PyYAML) keeps the
    explicit key. That one case is refused instead of guessing.
    """
    sources = value if type(value) is list else [value]
    merged: dict[str, Any] = {}
    for source in sources:
        if type(source) is not dict:
            _fail(
                "invalid_yaml",
                f"the merge key '<<'{_at(mark)} must be given a mapping or a list of mappings",
            )
        for k, v in source.items():
            if k not in merged:
                merged[k] = v
    for k, v in merged.items():
        if k in explicit:
            _fail(
                "ambiguous_merge",
                f"the key {_quote(k)} is set before a merge key '<<' that also sets it{_at(mark)}",
                hint="YAML readers disagree on which value wins; put '<<' first or drop one of them",
            )
        container[k] = v


# ---------------------------------------------------------------------------------------------
# JSON (kubectl reads a manifest starting with '{' as a JSON stream)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            _fail(
                "duplicate_key",
                f"the key {_quote(key)} appears twice in the same JSON object",
                hint="the API server rejects duplicate fields; keep one",
            )
        out[key] = value
    return out


def _json_float(text: str) -> int | float:
    value = float(text)
    if not math.isfinite(value):
        _fail("invalid_yaml", "a JSON number is too large to be represented")
    return _number(value)


def _json_constant(name: str) -> NoReturn:
    _fail("invalid_yaml", f"{name} is not valid JSON (numbers must be finite)")


def _read_json(text: str, limits: _Limits) -> list[tuple[int, Any]]:
    decoder = json.JSONDecoder(
        object_pairs_hook=_json_pairs, parse_constant=_json_constant, parse_float=_json_float
    )
    documents: list[tuple[int, Any]] = []
    pos, end, doc_no, nodes = 0, len(text), 0, 0
    whitespace = re.compile(r"[ \t\r\n\ufeff]*")
    while True:
        match = whitespace.match(text, pos)
        pos = match.end() if match else pos
        if pos >= end:
            return documents
        doc_no += 1
        if doc_no > limits.documents:
            _fail("too_many_documents", f"the manifest has more than {limits.documents} JSON documents")
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            _fail("invalid_yaml", f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}")
        except RecursionError:
            _fail("too_deep", f"document {doc_no} nests deeper than {limits.depth} levels")
        nodes += _check_json_shape(value, doc_no, limits)
        if nodes > limits.nodes:
            _fail("too_large", f"the manifest has more than {limits.nodes} JSON values")
        documents.append((doc_no, value))


def _check_json_shape(value: Any, doc_no: int, limits: _Limits) -> int:
    """Depth and size of one JSON document, iteratively."""
    count = 0
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        count += 1
        if type(item) is dict:
            children: Any = item.values()
        elif type(item) is list:
            children = item
        else:
            continue
        if depth > limits.depth:
            _fail("too_deep", f"document {doc_no} nests deeper than {limits.depth} levels")
        todo.extend((child, depth + 1) for child in children)
    return count


# ---------------------------------------------------------------------------------------------
# Objects

_DNS1123_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z](?:[-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
_API_VERSION = re.compile(r"(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?[a-z0-9]+")
_KIND = re.compile(r"[A-Za-z][A-Za-z0-9]*")

# Which name rule the API server applies (pkg/apis/*/validation ValidateObjectMeta callers).
_LABEL_KINDS = {("", "Namespace")}
_DNS1035_KINDS = {("", "Service")}
_SUBDOMAIN_KINDS = {
    *(("", k) for k in ("Pod", "ConfigMap", "Secret", "ServiceAccount", "Endpoints", "PersistentVolume")),
    *(("", k) for k in ("PersistentVolumeClaim", "ReplicationController", "ResourceQuota", "LimitRange")),
    *(("", k) for k in ("PodTemplate", "Node")),
    *(("apps", k) for k in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ControllerRevision")),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("autoscaling", "HorizontalPodAutoscaler"),
    ("policy", "PodDisruptionBudget"),
    *(("networking.k8s.io", k) for k in ("Ingress", "IngressClass", "NetworkPolicy")),
    *(("storage.k8s.io", k) for k in ("StorageClass", "CSIDriver", "CSINode", "VolumeAttachment")),
    ("scheduling.k8s.io", "PriorityClass"),
    ("node.k8s.io", "RuntimeClass"),
    ("coordination.k8s.io", "Lease"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
}
_CRONJOB_NAME_MAX = 52  # the Job names it creates get an 11-character suffix


def is_dns1123_label(name: str) -> bool:
    """A namespace (or container) name: at most 63 lowercase letters, digits and '-'."""
    return len(name) <= 63 and _DNS1123_LABEL.fullmatch(name) is not None


def _name_problem(group: str, kind: str, name: str) -> str | None:
    """Why the API server would refuse ``name`` for this kind (None when it is fine).

    Kinds not listed (RBAC, custom resources, the rarer built-ins) get the rule every object
    gets (path segment name): stricter kind-specific rules are left to the server.
    """
    key = (group, kind)
    if key in _DNS1035_KINDS:
        if len(name) > 63 or not _DNS1035_LABEL.fullmatch(name):
            return "must be a DNS-1035 label: at most 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"
    elif key in _LABEL_KINDS:
        if len(name) > 63 or not _DNS1123_LABEL.fullmatch(name):
            return "must be a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
    elif key in _SUBDOMAIN_KINDS:
        if len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
            return "must be a DNS-1123 subdomain: at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
        if key == ("batch", "CronJob") and len(name) > _CRONJOB_NAME_MAX:
            return f"must be at most {_CRONJOB_NAME_MAX} characters for a CronJob"
    if name in (".", "..") or "/" in name or "%" in name:
        return "may not be '.' or '..' and may not contain '/' or '%'"
    return None


def _to_object(body: Any, index: int, source: str) -> KubeObject:
    if type(body) is not dict:
        _fail("not_an_object", f"{source} is {_describe(body)}, not a Kubernetes object (a mapping)")
    api_version = body.get("apiVersion")
    kind = body.get("kind")
    if not isinstance(api_version, str) or not api_version:
        _fail(
            "missing_api_version",
            f"{source} has no apiVersion" + ("" if api_version is None else " string"),
            hint="every object needs apiVersion (e.g. apps/v1) and kind (e.g. Deployment)",
        )
    if not isinstance(kind, str) or not kind:
        _fail(
            "missing_kind",
            f"{source} has no kind" + ("" if kind is None else " string"),
            hint="every object needs apiVersion (e.g. apps/v1) and kind (e.g. Deployment)",
        )
    if not _API_VERSION.fullmatch(api_version):
        _fail(
            "invalid_api_version",
            f"{source}: apiVersion {_quote(api_version)} is not of the form 'v1' or 'group/version'",
        )
    if not _KIND.fullmatch(kind):
        _fail("missing_kind", f"{source}: kind {_quote(kind)} is not a valid kind name (letters and digits)")
    meta = body.get("metadata")
    if meta is None:
        _fail(
            "missing_name", f"{source} ({kind}) has no metadata.name", hint="server-side apply needs a name"
        )
    if type(meta) is not dict:
        _fail("invalid_metadata", f"{source} ({kind}): metadata must be a mapping, not {_describe(meta)}")
    name = meta.get("name")
    if name is None or name == "":
        if meta.get("generateName") is not None:
            _fail(
                "missing_name",
                f"{source} ({kind}) uses metadata.generateName, which apply does not support",
                hint="give the object a fixed metadata.name (server-side apply needs a name)",
            )
        _fail(
            "missing_name", f"{source} ({kind}) has no metadata.name", hint="server-side apply needs a name"
        )
    if not isinstance(name, str):
        _fail(
            "missing_name",
            f"{source} ({kind}): metadata.name must be a string, not {_describe(name)}",
            hint="quote it",
        )
    group = api_version.rpartition("/")[0]
    problem = _name_problem(group, kind, name)
    if problem is not None:
        _fail("invalid_name", f"{source}: {kind} name {_quote(name)} is invalid: metadata.name {problem}")
    namespace = meta.get("namespace")
    if namespace is not None:
        if not isinstance(namespace, str):
            _fail(
                "invalid_name",
                f"{source} ({kind}/{name}): metadata.namespace must be a string, not {_describe(namespace)}",
                hint="quote it",
            )
        if namespace == "":
            namespace = None
        elif len(namespace) > 63 or not _DNS1123_LABEL.fullmatch(namespace):
            _fail(
                "invalid_name",
                f"{source} ({kind}/{name}): metadata.namespace {_quote(namespace)} is invalid: it must be a DNS-1123 label "
                "(at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)",
            )
    return KubeObject(
        api_version=api_version,
        kind=kind,
        name=name,
        namespace=namespace,
        body=body,
        index=index,
        source=source,
    )


def _describe(value: Any) -> str:
    if value is None:
        return "empty (null)"
    if type(value) is bool:
        return "a boolean"
    if type(value) in (int, float):
        return "a number"
    if type(value) is str:
        return "a string"
    if type(value) is list:
        return "a list"
    return "a mapping"


def _is_list_kind(body: dict[str, Any]) -> bool:
    kind = body.get("kind")
    return isinstance(kind, str) and kind.endswith("List")


def _expand(documents: list[tuple[int, Any]], max_objects: int) -> list[KubeObject]:
    objects: list[KubeObject] = []
    for doc_no, body in documents:
        source = f"document {doc_no}"
        if type(body) is dict and _is_list_kind(body):
            if not isinstance(body.get("apiVersion"), str) or not body["apiVersion"]:
                _fail("missing_api_version", f"{source} ({body['kind']}) has no apiVersion")
            items = body.get("items")
            if items is None:
                items = []
            if type(items) is not list:
                _fail(
                    "not_an_object",
                    f"{source} ({body['kind']}): items must be a list, not {_describe(items)}",
                )
            for item_no, item in enumerate(items, start=1):
                item_source = f"{source}, item {item_no}"
                if type(item) is dict and (_is_list_kind(item) or "items" in item):
                    _fail(
                        "nested_list",
                        f"{item_source} is itself a list; lists inside a {body['kind']} are not supported",
                    )
                objects.append(_to_object(item, len(objects), item_source))
                if len(objects) > max_objects:
                    _fail("too_many_documents", f"the manifest has more than {max_objects} objects")
            continue
        if type(body) is dict and body.get("items") is not None:
            _fail(
                "ambiguous_list",
                f"{source} ({_describe_kind(body)}) has a top-level 'items' field",
                hint="kubectl would treat it as a list of objects; use kind: List for a list",
            )
        objects.append(_to_object(body, len(objects), source))
        if len(objects) > max_objects:
            _fail("too_many_documents", f"the manifest has more than {max_objects} objects")
    return objects


def _describe_kind(body: dict[str, Any]) -> str:
    kind = body.get("kind")
    return _quote(kind, 40)[1:-1] if isinstance(kind, str) else "no kind"


_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ufffe\uffff]")


def parse_manifest(
    text: str,
    *,
    max_bytes: int = 1_048_576,
    max_documents: int = 500,
    max_depth: int = 64,
    max_aliases: int = 100,
    max_nodes: int = 200_000,
) -> list[KubeObject]:
    """Read a YAML (multi-document) or JSON manifest into objects, in bundle order.

    Raises :class:`InvalidInput` (``details["rule_id"]`` = ``k8s.*``) for anything kubectl and
    the API server could read differently from this reader, and for anything over the limits.
    """
    if not isinstance(text, str):
        _fail("invalid_yaml", "the manifest must be text")
    if len(text) > max_bytes:
        _fail(
            "too_large",
            f"the manifest is larger than {max_bytes} bytes",
            hint="split it into smaller applies",
        )
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        _fail("invalid_yaml", "the manifest is not valid Unicode text (it contains a lone surrogate)")
    if size > max_bytes:
        _fail(
            "too_large",
            f"the manifest is {size} bytes, more than the {max_bytes} allowed",
            hint="split it into smaller applies",
        )
    bad = _BAD_CHARS.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        _fail(
            "invalid_yaml",
            f"the manifest contains a control character (U+{ord(bad.group()):04X}) at line {line}, column {column}",
            hint="only tab, newline and carriage return are allowed; escape other characters inside double quotes",
        )
    limits = _Limits(max_documents, max_depth, max_aliases, max_nodes)
    if text.lstrip(" \t\r\n\ufeff").startswith("{"):
        documents = _read_json(text, limits)
    else:
        documents = _read_yaml(text, limits)
    objects = _expand(documents, max_documents)
    if not objects:
        _fail(
            "empty_manifest", "the manifest contains no Kubernetes objects", hint="pass at least one object"
        )
    return objects


def manifest_json(obj: KubeObject) -> bytes:
    """The exact bytes sent to the API server for ``obj`` (deterministic, UTF-8)."""
    return json.dumps(obj.body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
