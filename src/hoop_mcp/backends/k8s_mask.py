"""Mask secrets in Kubernetes objects before anyone sees them (plans, approvals, diffs, audit).

What is masked (the value becomes :data:`REDACTED`; keys and structure stay, so approvers see
*which* keys change):

* ``data`` and ``stringData`` of a ``Secret`` (any API version; also of an object whose ``kind``
  is missing or not a string: fail closed). A ``data``/``stringData`` that is not a map is
  replaced whole.
* The ``kubectl.kubernetes.io/last-applied-configuration`` annotation of any object (it can hold
  a whole Secret), wherever an ``annotations`` map carries it. An ``annotations`` that is not a
  map is replaced whole.
* ``value`` of every ``env`` list entry, anywhere in the object (pod specs, custom resources),
  when the variable's NAME looks secret (:data:`SECRET_NAME_PARTS`, substring, case-insensitive;
  over-matching such as ``KEYCLOAK_URL`` is accepted) or is missing, or when the VALUE looks
  secret (:func:`looks_secret`), or is not a string. ``valueFrom`` is a reference and stays. In a
  pod spec's containers, an ``env`` that is not a list is replaced whole.
* A ``List``-shaped body (``items``) is masked item by item; an item without a ``kind`` takes it
  from the list's kind (``SecretList`` -> ``Secret``).

``metadata.managedFields`` is left alone: it records field *names* (``f:data: {f:password: {}}``),
never values. Masking is idempotent and never mutates its input.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from hoop_mcp.backends.k8s_checks import pod_specs
from hoop_mcp.backends.k8s_objects import KubeObject
from hoop_mcp.core.secret_scan import entropy

REDACTED: Final = "[REDACTED:k8s-secret]"
LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"
#: Shortest string :func:`secret_strings` returns (shorter ones cannot be scrubbed from free text
#: without destroying it).
MIN_SCRUB_LENGTH: Final = 4
#: An env var whose name contains one of these (case-insensitive) has its value masked.
SECRET_NAME_PARTS: Final = (
    "PASSWORD",
    "PASSWD",
    "PASS",
    "PWD",
    "SECRET",
    "TOKEN",
    "KEY",
    "CREDENTIAL",
    "CRED",
    "AUTH",
    "PRIVATE",
    "CERT",
    "DSN",
    "CONN",
    "DATABASE_URL",
    "DB_URL",
    "SALT",
    "SESSION",
    "COOKIE",
    "SIGNING",
    "ENCRYPT",
)

_VALUE_PATTERNS: Final = tuple(
    re.compile(p)
    for p in (
        r"[A-Za-z][A-Za-z0-9+.\-]*://[^/\s@:]*:[^/\s@]+@",  # URL with a password in its userinfo
        r"-----BEGIN[ A-Z0-9]*-----",  # PEM block (keys, certificates)
        r"eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}",  # JWT
        r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}",  # AWS access key id
        r"gh[pousr]_[A-Za-z0-9]{20,}",  # GitHub token
        r"github_pat_[A-Za-z0-9_]{20,}",  # GitHub fine-grained token
        r"xox[abposr]-[A-Za-z0-9\-]{10,}",  # Slack token
        r"glpat-[A-Za-z0-9_\-]{20,}",  # GitLab token
        r"[sr]k_live_[A-Za-z0-9]{20,}",  # Stripe live key
        r"AIza[A-Za-z0-9_\-]{35}",  # Google API key
        r"npm_[A-Za-z0-9]{36}",  # npm token
    )
)
_TOKEN_CHARS: Final = re.compile(r"[A-Za-z0-9+/=_\-]{20,}")
_HEX_OR_LOWER_ALNUM: Final = re.compile(r"[a-z0-9]{32,}")


def looks_secret(value: str) -> bool:
    """A credential by its shape: a known token format, a URL with a password, a PEM block, or a
    high-entropy token of 20+ characters (mixed case and digits, or 32+ lowercase alphanumerics)."""
    if any(p.search(value) for p in _VALUE_PATTERNS):
        return True
    text = value.strip()
    if not _TOKEN_CHARS.fullmatch(text) or entropy(text) < 3.5:
        return False
    has_digit = any(c.isdigit() for c in text)
    mixed_case = any(c.islower() for c in text) and any(c.isupper() for c in text)
    return (has_digit and mixed_case) or bool(_HEX_OR_LOWER_ALNUM.fullmatch(text) and has_digit)


def secret_name(name: object) -> bool:
    """An env var name that may carry a secret (a missing or non-string name does: fail closed)."""
    if not isinstance(name, str):
        return True
    upper = name.upper()
    return any(part in upper for part in SECRET_NAME_PARTS)


def _is_secret_kind(kind: object) -> bool:
    return not isinstance(kind, str) or kind.casefold() == "secret"


def _item_kind(list_kind: object) -> object:
    if isinstance(list_kind, str) and list_kind.endswith("List") and list_kind != "List":
        return list_kind[: -len("List")]
    return None


def _mask_env_entry(entry: dict[str, Any]) -> None:
    if "value" not in entry:
        return
    value = entry["value"]
    if value == REDACTED:
        return
    if not isinstance(value, str) or secret_name(entry.get("name")) or looks_secret(value):
        entry["value"] = REDACTED


def _walk(node: Any) -> None:
    """Env lists and last-applied annotations anywhere below ``node`` (in place, on a copy)."""
    if isinstance(node, dict):
        env = node.get("env")
        if isinstance(env, list):
            for entry in env:
                if isinstance(entry, dict):
                    _mask_env_entry(entry)
        annotations = node.get("annotations")
        if isinstance(annotations, dict) and LAST_APPLIED in annotations:
            annotations[LAST_APPLIED] = REDACTED
        for child in node.values():
            _walk(child)
    elif isinstance(node, list):
        for child in node:
            _walk(child)


def _mask_in_place(body: dict[str, Any], *, default_kind: object = None) -> None:
    kind = body.get("kind", default_kind)
    items = body.get("items")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict):
                _mask_in_place(item, default_kind=_item_kind(kind))
        kind = kind if isinstance(kind, str) else "List"  # a list's own data is not a Secret's
    if _is_secret_kind(kind):
        for field in ("data", "stringData"):
            if field not in body or body[field] is None:
                continue
            values = body[field]
            if isinstance(values, dict):
                body[field] = dict.fromkeys(values, REDACTED)
            else:
                body[field] = REDACTED
    metadata = body.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if isinstance(metadata, dict) and annotations is not None and not isinstance(annotations, dict):
        metadata["annotations"] = REDACTED
    if isinstance(kind, str):
        obj = KubeObject(api_version="", kind=kind, name="", namespace=None, body=body, index=0, source="")
        for _path, spec in pod_specs(obj):
            for key in ("initContainers", "containers", "ephemeralContainers"):
                containers = spec.get(key)
                for container in containers if isinstance(containers, list) else ():
                    env = container.get("env") if isinstance(container, dict) else None
                    if isinstance(container, dict) and env is not None and not isinstance(env, list):
                        container["env"] = REDACTED
    _walk({key: value for key, value in body.items() if not (key == "items" and isinstance(value, list))})


def mask_object(body: Mapping[str, Any]) -> dict[str, Any]:
    """A masked deep copy of ``body`` (see the module docstring); ``body`` is not changed."""
    out: dict[str, Any] = copy.deepcopy(dict(body))
    _mask_in_place(out)
    return out


def _strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for child in value.values():
            yield from _strings_in(child)
    elif isinstance(value, list):
        for child in value:
            yield from _strings_in(child)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def _decoded(value: str) -> str | None:
    try:
        raw = base64.b64decode("".join(value.split()), validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def _collect(body: Mapping[str, Any], found: list[str], *, default_kind: object = None) -> None:
    kind = body.get("kind", default_kind)
    items = body.get("items")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict):
                _collect(item, found, default_kind=_item_kind(kind))
        kind = kind if isinstance(kind, str) else "List"
    if _is_secret_kind(kind):
        for field in ("data", "stringData"):
            for text in _strings_in(body.get(field)):
                found.append(text)
                if field == "data":
                    decoded = _decoded(text)
                    if decoded is not None:
                        found.append(decoded)
    masked = mask_object(
        {key: value for key, value in body.items() if not (key == "items" and isinstance(value, list))}
    )
    _collect_masked(body, masked, found)


def _collect_masked(original: Any, masked: Any, found: list[str]) -> None:
    """Every string of ``original`` that masking replaced (env values, last-applied, ...)."""
    if masked == REDACTED and original != REDACTED:
        for text in _strings_in(original):
            found.append(text)
            if text.lstrip().startswith("{"):
                try:
                    inner = json.loads(text)
                except ValueError:
                    continue
                if isinstance(inner, dict):
                    _collect(inner, found)
        return
    if isinstance(original, dict) and isinstance(masked, dict):
        for key, value in original.items():
            if key in masked:
                _collect_masked(value, masked[key], found)
    elif isinstance(original, list) and isinstance(masked, list):
        for a, b in zip(original, masked, strict=False):
            _collect_masked(a, b, found)


def secret_strings(body: Mapping[str, Any]) -> list[str]:
    """Raw secret strings in ``body``, longest first, for scrubbing free text (API server errors).

    Every string :func:`mask_object` hides, plus the base64-decoded text of ``Secret.data`` values,
    and the secrets inside a last-applied-configuration annotation. Strings shorter than
    :data:`MIN_SCRUB_LENGTH` are left out.
    """
    found: list[str] = []
    _collect(body, found)
    unique = {text for text in found if len(text) >= MIN_SCRUB_LENGTH and text != REDACTED}
    return sorted(unique, key=lambda text: (-len(text), text))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret string (of at least ``MIN_SCRUB_LENGTH``) replaced, longest first."""
    for secret in sorted({x for x in secrets if len(x) >= MIN_SCRUB_LENGTH}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
