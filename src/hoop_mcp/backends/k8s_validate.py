"""Offline validation of parsed objects against the upstream Kubernetes OpenAPI schemas.

The schemas are the ``-strict`` JSON Schemas that ship with the ``kubernetes-validate`` package
(unknown fields are refused, as the API server's strict field validation refuses them). The
package itself is not imported (it pulls in jsonschema and friends): only its data files are
read. Each version's ``_definitions.json`` is loaded once and compiled lazily, per definition,
into small checking closures specialised to the keywords those schemas use (``type``,
``properties``, ``additionalProperties``, ``items``, ``required``, ``enum``, ``format``,
``oneOf``, ``$ref``); a compile step that meets any other validating keyword fails loudly.

Messages are written here, never taken from a validator, and never contain a field's value.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import json
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from hoop_mcp.backends.k8s_objects import KubeObject
from hoop_mcp.core.errors import ConfigError, InvalidInput

__all__ = ["available_versions", "is_namespaced", "validate_objects"]

_MAX_REPORTED = 5

# A path is a linked list built only as deep as the walk goes: (parent, key) or None.
_Path = tuple[Any, str | int] | None
_Errors = list[tuple[_Path, str]]
_Check = Callable[[Any, _Path, _Errors], None]


# ---------------------------------------------------------------------------------------------
# Schema files


def _schema_root() -> Path:
    spec = importlib.util.find_spec("kubernetes_validate")  # finds it without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the kubernetes-validate package (offline Kubernetes schemas) is not installed",
            hint="install kubernetes-validate",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "kubernetes-json-schema"


_VERSION_DIR = re.compile(r"v(\d+)\.(\d+)\.0-local-strict")


def available_versions() -> list[str]:
    """Kubernetes versions (``major.minor``) with offline strict schemas, oldest first."""
    found: list[tuple[int, int]] = []
    root = _schema_root()
    if root.is_dir():
        for entry in root.iterdir():
            m = _VERSION_DIR.fullmatch(entry.name)
            if m is not None and (entry / "_definitions.json").is_file():
                found.append((int(m.group(1)), int(m.group(2))))
    return [f"{major}.{minor}" for major, minor in sorted(found)]


def _normalise_version(version: str) -> str:
    m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?", version.strip()) if isinstance(version, str) else None
    available = available_versions()
    if m is None or f"{int(m.group(1))}.{int(m.group(2))}" not in available:
        raise ConfigError(
            f"Kubernetes version {str(version)[:40]!r} has no offline schemas",
            hint=f"set kubernetes_version to one of: {', '.join(available) or '(none installed)'}",
            details={"available_versions": available},
        )
    return f"{int(m.group(1))}.{int(m.group(2))}"


# ---------------------------------------------------------------------------------------------
# Compiling the schemas

_JSON_TYPE_NAMES: dict[type, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
    type(None): "null",
}
_TYPES_FOR: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),  # bool is not int here: checks use type(), not isinstance()
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}
_ANNOTATIONS = {"description", "x-kubernetes-group-version-kind", "$schema", "$id", "$defs"}
_HANDLED = {
    "$ref",
    "type",
    "properties",
    "additionalProperties",
    "items",
    "required",
    "enum",
    "format",
    "oneOf",
}
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")
_INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), "unknown")


def _expected(names: Sequence[str]) -> str:
    shown = [n for n in names if n != "null"] or list(names)
    return " or ".join(shown)


class _Compiler:
    """Lazily compiles the definitions of one schema version into checking closures."""

    def __init__(self, defs: dict[str, Any]) -> None:
        self._defs = defs
        self._compiled: dict[str, _Check] = {}
        self._lock = threading.Lock()

    def definition(self, name: str) -> _Check:
        check = self._compiled.get(name)
        if check is None:
            with self._lock:
                check = self._compiled.get(name)
                if check is None:
                    # Register a forwarding stub first so recursive definitions terminate.
                    cell: list[_Check] = []
                    self._compiled[name] = lambda v, p, e: cell[0](v, p, e)
                    cell.append(self._compile(self._defs[name]))
                    self._compiled[name] = check = cell[0]
        return check

    def _ref(self, ref: str) -> _Check:
        prefix = "#/$defs/"
        if not ref.startswith(prefix):
            raise ValueError(f"unsupported $ref {ref!r}")
        name = ref[len(prefix) :]
        if name not in self._defs:
            raise ValueError(f"dangling $ref {ref!r}")
        compiled = self._compiled
        definition = self.definition

        def check_ref(value: Any, path: _Path, errors: _Errors) -> None:
            target = compiled.get(name)
            if target is None:
                target = definition(name)
            target(value, path, errors)

        return check_ref

    def _compile(self, schema: dict[str, Any]) -> _Check:
        unknown = {
            k for k in schema if k not in _HANDLED and k not in _ANNOTATIONS and not k.startswith("x-")
        }
        if unknown:
            raise ValueError(f"schema keyword(s) not supported by the offline validator: {sorted(unknown)}")
        steps: list[_Check] = []

        if "$ref" in schema:
            steps.append(self._ref(schema["$ref"]))

        type_names: list[str] = []
        if "type" in schema:
            raw = schema["type"]
            type_names = [raw] if isinstance(raw, str) else list(raw)
        elif "oneOf" in schema and all(set(b) <= {"type"} | _ANNOTATIONS for b in schema["oneOf"]):
            # IntOrString, Quantity: a union of types (null, allowed by both, is accepted once).
            for branch in schema["oneOf"]:
                raw = branch.get("type", [])
                type_names.extend([raw] if isinstance(raw, str) else raw)
        elif "oneOf" in schema:
            branches = [self._compile(b) for b in schema["oneOf"]]

            def check_one_of(value: Any, path: _Path, errors: _Errors) -> None:
                matches = 0
                for branch_check in branches:
                    trial: _Errors = []
                    branch_check(value, path, trial)
                    matches += not trial
                if matches != 1:
                    errors.append((path, "does not match exactly one of the allowed forms"))

            steps.append(check_one_of)

        allowed: tuple[type, ...] = ()
        for name in type_names:
            allowed += _TYPES_FOR[name]
        expected = _expected(type_names)

        properties = {k: self._compile(v) for k, v in schema.get("properties", {}).items()}
        additional = schema.get("additionalProperties", True)
        additional_check = self._compile(additional) if isinstance(additional, dict) else None
        forbid_unknown = additional is False
        required = tuple(schema.get("required", ()))
        items_check = self._compile(schema["items"]) if isinstance(schema.get("items"), dict) else None
        enum = schema.get("enum")
        fmt = schema.get("format")

        if properties or additional_check is not None or forbid_unknown or required:

            def check_object(value: Any, path: _Path, errors: _Errors) -> None:
                if type(value) is not dict:
                    return
                for field in required:
                    if value.get(field) is None:
                        errors.append(((path, field), "required field is missing"))
                for key, item in value.items():
                    sub = properties.get(key)
                    if sub is not None:
                        sub(item, (path, key), errors)
                    elif additional_check is not None:
                        additional_check(item, (path, key), errors)
                    elif forbid_unknown:
                        errors.append(((path, key), "unknown field"))

            steps.append(check_object)

        if items_check is not None:

            def check_items(value: Any, path: _Path, errors: _Errors) -> None:
                if type(value) is list:
                    for index, item in enumerate(value):
                        items_check(item, (path, index), errors)

            steps.append(check_items)

        if enum is not None:
            allowed_values = list(enum)
            shown = ", ".join(json.dumps(v) for v in allowed_values[:8])

            def check_enum(value: Any, path: _Path, errors: _Errors) -> None:
                if value not in allowed_values or type(value) is bool:
                    errors.append((path, f"must be one of: {shown}"))

            steps.append(check_enum)

        if fmt in _INT_RANGE:
            low, high = _INT_RANGE[fmt]

            def check_int_range(value: Any, path: _Path, errors: _Errors) -> None:
                if type(value) is int and not low <= value <= high:
                    errors.append((path, f"number is out of range for {fmt}"))

            steps.append(check_int_range)
        elif fmt == "byte":

            def check_base64(value: Any, path: _Path, errors: _Errors) -> None:
                if type(value) is str and value:
                    try:
                        base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
                    except (binascii.Error, ValueError):
                        errors.append((path, "value is not valid base64 (use stringData for plain text)"))

            steps.append(check_base64)
        elif fmt == "date-time":

            def check_time(value: Any, path: _Path, errors: _Errors) -> None:
                if type(value) is str and not _RFC3339.fullmatch(value):
                    errors.append((path, "expected an RFC 3339 date-time such as 2024-01-31T12:00:00Z"))

            steps.append(check_time)

        if allowed:
            rest = tuple(steps)

            def check_typed(value: Any, path: _Path, errors: _Errors) -> None:
                if type(value) not in allowed:
                    errors.append((path, f"expected {expected}, got {_json_type(value)}"))
                    return
                for step in rest:
                    step(value, path, errors)

            return check_typed
        if len(steps) == 1:
            return steps[0]
        rest = tuple(steps)

        def check_all(value: Any, path: _Path, errors: _Errors) -> None:
            for step in rest:
                step(value, path, errors)

        return check_all


class _Version:
    """One Kubernetes version's schemas: the GVK index and the lazily compiled checks."""

    def __init__(self, version: str) -> None:
        major, minor = version.split(".")
        path = _schema_root() / f"v{major}.{minor}.0-local-strict" / "_definitions.json"
        with path.open(encoding="utf-8") as handle:
            document = json.load(handle)
        defs: dict[str, Any] = document["$defs"]
        self.version = version
        self.index: dict[tuple[str, str], str] = {}
        for name, schema in defs.items():
            for gvk in schema.get("x-kubernetes-group-version-kind", ()):
                group, ver, kind = gvk.get("group", ""), gvk["version"], gvk["kind"]
                api_version = f"{group}/{ver}" if group else ver
                # meta.v1 types (DeleteOptions, WatchEvent, ...) are listed under every group.
                self.index.setdefault((api_version, kind), name)
        self.compiler = _Compiler(defs)
        self._checks: dict[tuple[str, str], _Check] = {}

    def check_for(self, api_version: str, kind: str) -> _Check | None:
        key = (api_version, kind)
        check = self._checks.get(key)
        if check is None:
            name = self.index.get(key)
            if name is None:
                return None
            check = self._checks[key] = self.compiler.definition(name)
        return check


_VERSIONS: dict[str, _Version] = {}
_VERSIONS_LOCK = threading.Lock()


def _schemas(version: str) -> _Version:
    loaded = _VERSIONS.get(version)
    if loaded is None:
        with _VERSIONS_LOCK:
            loaded = _VERSIONS.get(version)
            if loaded is None:
                loaded = _VERSIONS[version] = _Version(version)
    return loaded


def schema_kinds(kubernetes_version: str = "1.30") -> list[tuple[str, str]]:
    """Every ``(apiVersion, kind)`` the offline schemas of that version define (for tests/tools)."""
    return sorted(_schemas(_normalise_version(kubernetes_version)).index)


# ---------------------------------------------------------------------------------------------
# Kinds that are not objects one can apply (meta types, reviews, subresources, lists)

_NOT_APPLIABLE = {
    "APIGroup",
    "APIGroupList",
    "APIResourceList",
    "APIVersions",
    "DeleteOptions",
    "Status",
    "WatchEvent",
}
_CREATE_ONLY = {
    ("", "Binding"),
    ("autoscaling", "Scale"),
    ("policy", "Eviction"),
    ("authentication.k8s.io", "TokenRequest"),
    ("authentication.k8s.io", "TokenReview"),
    ("authentication.k8s.io", "SelfSubjectReview"),
    ("authorization.k8s.io", "LocalSubjectAccessReview"),
    ("authorization.k8s.io", "SelfSubjectAccessReview"),
    ("authorization.k8s.io", "SelfSubjectRulesReview"),
    ("authorization.k8s.io", "SubjectAccessReview"),
}

# Cluster-scoped built-in kinds (by group). Every other built-in kind is namespaced.
_CLUSTER_SCOPED: dict[str, frozenset[str]] = {
    "": frozenset({"Namespace", "Node", "PersistentVolume", "ComponentStatus"}),
    "rbac.authorization.k8s.io": frozenset({"ClusterRole", "ClusterRoleBinding"}),
    "storage.k8s.io": frozenset(
        {"StorageClass", "CSIDriver", "CSINode", "VolumeAttachment", "VolumeAttributesClass"}
    ),
    "admissionregistration.k8s.io": frozenset(
        {
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "MutatingAdmissionPolicy",
            "MutatingAdmissionPolicyBinding",
        }
    ),
    "apiextensions.k8s.io": frozenset({"CustomResourceDefinition"}),
    "apiregistration.k8s.io": frozenset({"APIService"}),
    "scheduling.k8s.io": frozenset({"PriorityClass"}),
    "node.k8s.io": frozenset({"RuntimeClass"}),
    "certificates.k8s.io": frozenset({"CertificateSigningRequest", "ClusterTrustBundle"}),
    "flowcontrol.apiserver.k8s.io": frozenset({"FlowSchema", "PriorityLevelConfiguration"}),
    "networking.k8s.io": frozenset({"IngressClass", "IPAddress", "ServiceCIDR", "ClusterCIDR"}),
    "policy": frozenset({"PodSecurityPolicy"}),
    "authentication.k8s.io": frozenset({"TokenReview", "SelfSubjectReview"}),
    "authorization.k8s.io": frozenset(
        {"SubjectAccessReview", "SelfSubjectAccessReview", "SelfSubjectRulesReview"}
    ),
    "internal.apiserver.k8s.io": frozenset({"StorageVersion"}),
    "storagemigration.k8s.io": frozenset({"StorageVersionMigration"}),
    "resource.k8s.io": frozenset(
        {"ResourceClass", "ResourceSlice", "DeviceClass", "DeviceTaintRule", "ResourcePoolStatusRequest"}
    ),
}
_NAMESPACED: dict[str, frozenset[str]] = {
    "": frozenset(
        {
            "Binding",
            "ConfigMap",
            "Endpoints",
            "Event",
            "LimitRange",
            "PersistentVolumeClaim",
            "Pod",
            "PodTemplate",
            "ReplicationController",
            "ResourceQuota",
            "Secret",
            "Service",
            "ServiceAccount",
        }
    ),
    "apps": frozenset({"ControllerRevision", "DaemonSet", "Deployment", "ReplicaSet", "StatefulSet"}),
    "batch": frozenset({"CronJob", "Job"}),
    "autoscaling": frozenset({"HorizontalPodAutoscaler", "Scale"}),
    "policy": frozenset({"PodDisruptionBudget", "Eviction"}),
    "networking.k8s.io": frozenset({"Ingress", "NetworkPolicy"}),
    "rbac.authorization.k8s.io": frozenset({"Role", "RoleBinding"}),
    "coordination.k8s.io": frozenset({"Lease", "LeaseCandidate"}),
    "discovery.k8s.io": frozenset({"EndpointSlice"}),
    "events.k8s.io": frozenset({"Event"}),
    "storage.k8s.io": frozenset({"CSIStorageCapacity"}),
    "authentication.k8s.io": frozenset({"TokenRequest"}),
    "authorization.k8s.io": frozenset({"LocalSubjectAccessReview"}),
    "certificates.k8s.io": frozenset({"PodCertificateRequest"}),
    "lifecycle.k8s.io": frozenset({"Eviction", "EvictionRequest"}),
    "scheduling.k8s.io": frozenset({"PodGroup", "CompositePodGroup", "Workload"}),
    "resource.k8s.io": frozenset(
        {
            "PodScheduling",
            "PodSchedulingContext",
            "ResourceClaim",
            "ResourceClaimParameters",
            "ResourceClaimTemplate",
            "ResourceClassParameters",
        }
    ),
}


def is_namespaced(api_version: str, kind: str) -> bool | None:
    """Whether a built-in kind lives in a namespace; ``None`` for kinds this table does not know."""
    group = api_version.rpartition("/")[0]
    if kind in _CLUSTER_SCOPED.get(group, ()):
        return False
    if kind in _NAMESPACED.get(group, ()):
        return True
    return None


# ---------------------------------------------------------------------------------------------
# Validation


def _render_path(path: _Path) -> str:
    parts: list[str | int] = []
    while path is not None:
        path, key = path
        parts.append(key)
    out = ""
    for key in reversed(parts):
        if isinstance(key, int):
            out += f"[{key}]"
        elif re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$-]*", key):
            out += f".{key}" if out else key
        else:
            shown = key if len(key) <= 60 else key[:57] + "..."
            out += f"[{json.dumps(shown, ensure_ascii=False)}]"
    return out or "(top level)"


def _fail(rule: str, message: str, *, hint: str | None = None, **details: Any) -> NoReturn:
    raise InvalidInput(message, hint=hint, details={"rule_id": f"k8s.{rule}", **details})


def validate_objects(objects: Sequence[KubeObject], *, kubernetes_version: str = "1.30") -> None:
    """Check every object against the strict upstream schema of ``kubernetes_version``.

    Raises :class:`ConfigError` for a version without schemas (an operator setting) and
    :class:`InvalidInput` (``k8s.unknown_kind``, ``k8s.not_appliable``, ``k8s.schema_invalid``)
    for the objects. Field values never appear in the messages.
    """
    schemas = _schemas(_normalise_version(kubernetes_version))
    problems: list[str] = []
    total = 0
    for obj in objects:
        label = f"{obj.source} {obj.kind}/{obj.name[:80]}"
        group = obj.group
        if obj.kind in _NOT_APPLIABLE or (group, obj.kind) in _CREATE_ONLY or obj.kind.endswith("List"):
            _fail(
                "not_appliable",
                f"{label}: {obj.kind} ({obj.api_version}) is not an object that can be applied",
                hint="apply stored resources such as Deployments, Services or ConfigMaps",
            )
        check = schemas.check_for(obj.api_version, obj.kind)
        if check is None:
            known_versions = sorted(av for av, kind in schemas.index if kind == obj.kind)
            if known_versions:
                detail = f"kind {obj.kind} exists as apiVersion {', '.join(known_versions[:4])}, not {obj.api_version[:80]}"
            else:
                detail = f"kind {obj.kind[:80]} with apiVersion {obj.api_version[:80]} is not a built-in Kubernetes {schemas.version} kind"
            _fail(
                "unknown_kind",
                f"{label}: {detail}",
                hint="check the spelling of kind and apiVersion; custom resources are not supported by this connection",
                kind=obj.kind[:80],
                api_version=obj.api_version[:80],
            )
        errors: _Errors = []
        check(obj.body, None, errors)
        total += len(errors)
        for path, message in errors:
            if len(problems) < _MAX_REPORTED:
                problems.append(f"{label}: {_render_path(path)}: {message}")
    if problems:
        more = f" (and {total - len(problems)} more)" if total > len(problems) else ""
        _fail(
            "schema_invalid",
            f"{total} schema error{'s' if total != 1 else ''} against Kubernetes {schemas.version}{more}: "
            + "; ".join(problems),
            hint="fix the field names and types (see `kubectl explain <kind>.<field>`)",
        )
