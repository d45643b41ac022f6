"""A Kubernetes API emulator for tests, built on ``kmock`` and served on 127.0.0.1 from its own thread.

Use the ``kube_emulator`` fixture (register ``tests.support.kube`` in ``pytest_plugins``), or
``with running_kube_emulator() as kube:`` where a fixture does not fit.

    kube.url, kube.token            # http://127.0.0.1:PORT; every request needs "Authorization: Bearer <token>"
    kube.put({...})                 # seed an object (no request logged); returns the stored copy
    kube.get("apps/v1", "Deployment", "prod", "web")   # stored object or None (a deep copy)
    kube.objects()                  # every stored object
    kube.set_logs("prod", "web-0", "line1\\nline2\\n", container=None)   # also seeds a Pod if missing
    kube.requests, kube.writes(), kube.clear()   # request log: Recorded(method, path, params, headers, body, json, status)
    kube.fail_next(409, conflict_status("kubectl", [".spec.replicas"], api_version="apps/v1"), path_contains="/deployments/")
    kube.delay(None)                # hold matching requests until kube.release() (or teardown); delay(2.0) = 2 s
    kube.add_resource("example.com/v1", "widgets", "Widget")   # register a CRD-like kind (discovery + storage)
    kube.strict_namespaces = True   # writes into a namespace with no Namespace object get 404, like a real server
    kube.stop()                     # server down: the port refuses connections, the thread is gone

Why kmock and what is replaced: kmock's ``Server``/``RawHandler`` provide the aiohttp server, request parsing
and recording (``handler.requests``), its ``KubernetesScaffold`` serves discovery (``/api``, ``/apis``,
``/api/v1``, ``/apis/<g>[/<v>]``) from ``handler.resources`` and renders errors as ``Status`` objects. kmock's
stateful ``KubernetesEmulator`` is NOT used: its dry-run mutates state, server-side apply does not create, there
is no resourceVersion/managedFields/conflict logic, and it answers ``/version/`` with 404. Instead
``_KubeHandler._handle`` implements the object semantics below over an in-memory store. The kmock ``Server`` is
subclassed only to skip its aiohttp client session and its process-wide aiohttp DNS interceptor (a global
monkeypatch that must be unwound LIFO; nothing here uses aiohttp as a client).

Emulated (enough for the official ``kubernetes`` client, DynamicClient included, and for raw httpx):

* Bearer-token authentication on every path (401 ``Status`` otherwise), checked before anything else.
* Discovery for common built-in kinds (``BUILTIN_RESOURCES``), ``/version`` and ``/version/``.
* GET object; LIST (namespaced or across namespaces) as ``<Kind>List`` with ``metadata.resourceVersion``,
  items WITHOUT apiVersion/kind (like a real server), ``labelSelector`` (``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``,
  ``a in (x,y)``, ``a notin (x)``), ``fieldSelector`` (any dotted path with ``=``/``==``/``!=``, e.g.
  ``involvedObject.name=web``), ``limit``/``continue``. ``watch=true`` gets 400 (not emulated).
* Server-side apply (``PATCH`` with ``application/apply-patch+yaml``, JSON or YAML body): creates when missing,
  otherwise merges (dicts merged recursively, lists replaced whole; a real server merges keyed lists such as
  ``containers`` by name). Fields a manager applied before and omits now are removed unless another manager owns
  them. ``fieldManager`` is required (422 ``Invalid``, as a real server says). Ownership is tracked per manager in
  ``metadata.managedFields`` (``FieldsV1``; lists are atomic), so applying a field another manager owns with a
  different value gives a real-looking 409 field-manager conflict unless ``force=true``. ``dryRun=All`` runs
  every check and returns the would-be object without storing it (a dry-run create has no resourceVersion).
  A ``metadata.resourceVersion`` in the body that differs from the stored one gives 409. Sets uid,
  creationTimestamp, resourceVersion (a global counter, like etcd's revision) and generation (bumped when
  anything outside metadata/status changes). A no-op apply changes nothing (resourceVersion kept). ``status``
  in an apply body is dropped for kinds with a status subresource. Invalid names get 422.
* ``PATCH`` with ``merge-patch+json`` / ``strategic-merge-patch+json`` (both as RFC 7386 merge patches),
  ``POST`` create (409 AlreadyExists, ``generateName``), ``PUT`` replace, ``DELETE`` (returns a Success
  ``Status``; deleting a Namespace deletes its objects at once). Any other PATCH content type: 415.
* Pod logs ``GET .../pods/<name>/log`` with ``container``, ``tailLines``, ``limitBytes`` (``sinceSeconds``,
  ``timestamps``, ``follow`` are accepted and ignored; follow returns what is there and ends).
* Anything else: 404 ``Status`` (reason NotFound).

Not emulated: RBAC (use ``fail_next(403, forbidden_status(...))``), admission/validation beyond names,
defaulting, watches, keyed-list merging, status/scale subresource writes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import datetime
import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp.web
import attrs
import kmock
import pytest
import yaml
from kmock._internal import rendering

JsonDict = dict[str, Any]
Path = tuple[str, ...]

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_CONTENT_TYPES = frozenset({"application/merge-patch+json", "application/strategic-merge-patch+json"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SERVER_VERSION: JsonDict = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0-kmock",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-04-17T00:00:00Z",
    "goVersion": "go1.22.2",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
_SUBRESOURCE_VERBS = {
    "log": ["get"],
    "status": ["get", "patch", "update"],
    "scale": ["get", "patch", "update"],
}
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
#: Paths that never count as owned fields (identity and server-managed metadata).
_UNOWNED: frozenset[Path] = frozenset(
    {
        ("apiVersion",),
        ("kind",),
        ("metadata", "name"),
        ("metadata", "namespace"),
        ("metadata", "resourceVersion"),
        ("metadata", "uid"),
        ("metadata", "managedFields"),
        ("metadata", "creationTimestamp"),
        ("metadata", "generation"),
        ("metadata", "selfLink"),
        ("metadata", "deletionTimestamp"),
        ("metadata", "generateName"),
    }
)
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass(frozen=True)
class ResourceType:
    """One served resource: ``group``/``version``/``plural`` plus what discovery reports about it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: tuple[str, ...] = ()
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_plural(self) -> str:
        """``deployments.apps`` / ``configmaps``: how a real server names the resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _types(api_version: str, *rows: tuple[str, str, bool, tuple[str, ...]]) -> list[ResourceType]:
    group, _, version = api_version.rpartition("/")
    return [
        ResourceType(group, version, plural, kind, namespaced, subs)
        for plural, kind, namespaced, subs in rows
    ]


_S = ("status",)
BUILTIN_RESOURCES: tuple[ResourceType, ...] = tuple(
    _types(
        "v1",
        ("namespaces", "Namespace", False, ("status", "finalize")),
        ("pods", "Pod", True, ("log", "status")),
        ("services", "Service", True, _S),
        ("configmaps", "ConfigMap", True, ()),
        ("secrets", "Secret", True, ()),
        ("serviceaccounts", "ServiceAccount", True, ()),
        ("events", "Event", True, ()),
        ("nodes", "Node", False, _S),
        ("persistentvolumeclaims", "PersistentVolumeClaim", True, _S),
    )
    + _types(
        "apps/v1",
        ("deployments", "Deployment", True, ("scale", "status")),
        ("statefulsets", "StatefulSet", True, ("scale", "status")),
        ("daemonsets", "DaemonSet", True, _S),
        ("replicasets", "ReplicaSet", True, ("scale", "status")),
    )
    + _types("batch/v1", ("jobs", "Job", True, _S), ("cronjobs", "CronJob", True, _S))
    + _types(
        "networking.k8s.io/v1",
        ("ingresses", "Ingress", True, _S),
        ("networkpolicies", "NetworkPolicy", True, ()),
    )
    + _types(
        "rbac.authorization.k8s.io/v1",
        ("roles", "Role", True, ()),
        ("rolebindings", "RoleBinding", True, ()),
        ("clusterroles", "ClusterRole", False, ()),
        ("clusterrolebindings", "ClusterRoleBinding", False, ()),
    )
    + _types(
        "admissionregistration.k8s.io/v1",
        ("validatingwebhookconfigurations", "ValidatingWebhookConfiguration", False, ()),
        ("mutatingwebhookconfigurations", "MutatingWebhookConfiguration", False, ()),
    )
    + _types("apiextensions.k8s.io/v1", ("customresourcedefinitions", "CustomResourceDefinition", False, _S))
    + _types("policy/v1", ("poddisruptionbudgets", "PodDisruptionBudget", True, _S))
    + _types("autoscaling/v2", ("horizontalpodautoscalers", "HorizontalPodAutoscaler", True, _S))
    + _types("events.k8s.io/v1", ("events", "Event", True, ()))
)


# ---------------------------------------------------------------------------------------------- Status bodies


def status_body(
    code: int, message: str, *, reason: str | None = None, details: Mapping[str, Any] | None = None
) -> JsonDict:
    """A failure ``Status`` object as a real API server sends it."""
    body: JsonDict = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details is not None:
        body["details"] = dict(details)
    return body


def conflict_status(
    manager: str,
    fields: list[str],
    *,
    api_version: str | None = None,
    name: str | None = None,
    kind: str | None = None,
    group: str | None = None,
) -> JsonDict:
    """A server-side-apply field-manager conflict (409), worded like a real server.

    ``api_version`` marks ``manager`` as an Update-operation owner (``conflict with "kubectl" using apps/v1``);
    without it the owner is an Apply manager (``conflict with "hoop"``).
    """
    who = f'"{manager}" using {api_version}' if api_version else f'"{manager}"'
    if len(fields) == 1:
        message = f"Apply failed with 1 conflict: conflict with {who}: {fields[0]}"
    else:
        listing = "\n".join(f"- {f}" for f in fields)
        message = f"Apply failed with {len(fields)} conflicts: conflicts with {who}:\n{listing}"
    details: JsonDict = {
        "causes": [
            {"reason": "FieldManagerConflict", "message": f"conflict with {who}", "field": f} for f in fields
        ]
    }
    for key, value in (("name", name), ("group", group), ("kind", kind)):
        if value is not None:
            details[key] = value
    return status_body(409, message, reason="Conflict", details=details)


def forbidden_status(
    user: str, verb: str, resource: str, *, group: str = "", namespace: str | None = None
) -> JsonDict:
    """RBAC denial (403) worded like a real server: ``configmaps is forbidden: User "agent" cannot list ...``."""
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    message = f'{resource} is forbidden: User "{user}" cannot {verb} resource "{resource}" in API group "{group}"{where}'
    return status_body(
        403,
        message,
        reason="Forbidden",
        details={"kind": resource, "group": group} if group else {"kind": resource},
    )


def invalid_status(kind: str, name: str, causes: list[tuple[str, str]]) -> JsonDict:
    """Validation failure (422); ``causes`` are ``(field, message)`` pairs."""
    summary = ", ".join(f"{f}: {m}" for f, m in causes)
    details = {
        "name": name,
        "kind": kind,
        "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes],
    }
    return status_body(422, f'{kind} "{name}" is invalid: {summary}', reason="Invalid", details=details)


class _StatusError(Exception):
    def __init__(self, code: int, body: JsonDict) -> None:
        super().__init__(body.get("message"))
        self.code = code
        self.body = body


def _fail(
    code: int, message: str, *, reason: str | None = None, details: Mapping[str, Any] | None = None
) -> _StatusError:
    return _StatusError(code, status_body(code, message, reason=reason, details=details))


def _details(rt: ResourceType, name: str) -> JsonDict:
    """``details`` of an object-level Status as a real server fills them (no ``group`` for the core group)."""
    return (
        {"name": name, "group": rt.group, "kind": rt.plural}
        if rt.group
        else {"name": name, "kind": rt.plural}
    )


def _not_found(rt: ResourceType, name: str) -> _StatusError:
    return _fail(404, f'{rt.group_plural} "{name}" not found', details=_details(rt, name))


# ---------------------------------------------------------------------------------------------- request log


@dataclass
class Recorded:
    """One request as the emulator saw it (``status`` is filled in once answered)."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]  # lower-case keys
    body: bytes
    json: Any  # parsed JSON body (or YAML for apply-patch+yaml); None when absent or unparseable
    status: int = 0

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    @property
    def dry_run(self) -> bool:
        return self.params.get("dryRun") == "All"

    @property
    def field_manager(self) -> str | None:
        return self.params.get("fieldManager")

    @property
    def is_apply(self) -> bool:
        return self.method == "PATCH" and self.content_type == APPLY_CONTENT_TYPE


@dataclass
class _Rule:
    count: int | None  # None: forever
    path_contains: str | None
    match: Callable[[Recorded], bool] | None
    status: int = 0
    body: JsonDict | str | bytes | None = None
    seconds: float | None = None

    def matches(self, rec: Recorded) -> bool:
        if self.path_contains is not None and self.path_contains not in rec.path:
            return False
        return self.match is None or self.match(rec)


# ---------------------------------------------------------------------------------------------- dict helpers


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(base: Any, patch: Any, *, null_deletes: bool) -> Any:
    """Recursive dict merge; lists and scalars in ``patch`` replace. RFC 7386 when ``null_deletes``."""
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None and null_deletes:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, null_deletes=null_deletes)
        else:
            out[key] = (
                _merge(None, value, null_deletes=null_deletes)
                if isinstance(value, dict)
                else copy.deepcopy(value)
            )
    return out


def _leaf_paths(obj: Any, prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    if not isinstance(obj, dict):
        return paths
    for key, value in obj.items():
        path = (*prefix, str(key))
        if path in _UNOWNED or path == ("status",):
            continue
        if isinstance(value, dict) and value:
            paths |= _leaf_paths(value, path)
        else:
            paths.add(path)
    return paths


_MISSING = object()


def _get_path(obj: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def _del_path(obj: JsonDict, path: Path) -> None:
    parents: list[tuple[JsonDict, str]] = []
    node: Any = obj
    for key in path[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return
        parents.append((node, key))
        node = node[key]
    node.pop(path[-1], None)
    for parent, key in reversed(parents):  # prune maps left empty
        if parent[key] == {}:
            del parent[key]
        else:
            break


def _fields_to_paths(fields: Any, prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    if not isinstance(fields, dict):
        return paths
    for key, value in fields.items():
        if key == ".":
            continue
        if not key.startswith("f:"):  # k:/v:/i: list members: treat the list as owned whole
            paths.add(prefix)
            continue
        path = (*prefix, key[2:])
        sub = {k: v for k, v in value.items() if k != "."} if isinstance(value, dict) else {}
        paths |= _fields_to_paths(sub, path) if sub else {path}
    return paths


def _paths_to_fields(paths: set[Path]) -> JsonDict:
    root: JsonDict = {}
    for path in sorted(paths):
        node = root
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return root


def _dotted(path: Path) -> str:
    return "." + ".".join(path)


def _is_under(path: Path, owned: Path) -> bool:
    """``path`` is ``owned`` or inside it, or ``owned`` is inside ``path``."""
    n = min(len(path), len(owned))
    return path[:n] == owned[:n]


#: One label requirement: (operator, key, values); operators: in, notin, exists, absent.
LabelRequirement = tuple[str, str, frozenset[str]]


def _parse_label_selector(selector: str) -> list[LabelRequirement]:
    terms = [t.strip() for t in re.findall(r"[^,(]+(?:\([^)]*\))?", selector) if t.strip()]
    requirements: list[LabelRequirement] = []
    for term in terms:
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s*\(([^)]*)\)", term):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            requirements.append((m.group(2), m.group(1), values))
        elif m := re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)", term):
            requirements.append(
                ("notin" if m.group(2) == "!=" else "in", m.group(1), frozenset({m.group(3)}))
            )
        elif m := re.fullmatch(r"(!?)([\w./-]+)", term):
            requirements.append(("absent" if m.group(1) else "exists", m.group(2), frozenset()))
        else:
            raise _fail(400, f"unable to parse requirement: {term!r}")
    return requirements


def _labels_match(labels: Mapping[str, str], requirements: list[LabelRequirement]) -> bool:
    for op, key, values in requirements:
        ok = {
            "in": key in labels and labels[key] in values,
            "notin": labels.get(key) not in values,
            "exists": key in labels,
            "absent": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _parse_field_selector(selector: str) -> list[Callable[[JsonDict], bool]]:
    checks: list[Callable[[JsonDict], bool]] = []
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        m = re.fullmatch(r"([\w.]+)\s*(==|=|!=)\s*(.*)", term)
        if not m:
            raise _fail(400, f"invalid field selector: {term!r}")
        path, op, value = tuple(m.group(1).split(".")), m.group(2), m.group(3)

        def check(obj: JsonDict, p: Path = path, v: str = value, neg: bool = op == "!=") -> bool:
            actual = _get_path(obj, p)
            text = "" if actual is _MISSING or actual is None else str(actual)
            return (text == v) != neg

        checks.append(check)
    return checks


# ---------------------------------------------------------------------------------------------- the emulator


class KubeEmulator:
    """The emulator: state, request log, fault injection; its kmock server runs in a private thread."""

    def __init__(self, *, token: str | None = None, host: str = "127.0.0.1") -> None:
        self.token = token or secrets.token_urlsafe(24)
        self.host = host
        self.port = 0
        self.strict_namespaces = False
        #: Exceptions raised inside the emulator while serving (bugs, not injected faults); the fixture fails on them.
        self.errors: list[BaseException] = []
        self._lock = threading.RLock()
        self._resources: dict[tuple[str, str, str], ResourceType] = {}
        self._objects: dict[tuple[str, str, str, str], JsonDict] = {}  # (apiVersion, kind, namespace, name)
        self._logs: dict[tuple[str, str, str | None], str] = {}
        self._requests: list[Recorded] = []
        self._fail_rules: list[_Rule] = []
        self._delay_rules: list[_Rule] = []
        self._revision = 0
        self._handler = _KubeHandler(emulator=self)
        for rt in BUILTIN_RESOURCES:
            self._register(rt)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._release_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # -- lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def start(self, *, timeout: float = 10.0) -> Self:
        if self._thread is not None:
            raise RuntimeError("the emulator can be started only once")
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"kube emulator did not start within {timeout} s")
        if self._startup_error is not None:
            raise RuntimeError("kube emulator failed to start") from self._startup_error
        return self

    def stop(self, *, timeout: float = 10.0) -> None:
        """Shut the server down (connections are refused afterwards) and join its thread. Idempotent."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None or not thread.is_alive():
            return
        if loop is not None and stop_event is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"kube emulator thread did not stop within {timeout} s")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        # Anything at all (startup failure or crash) goes to start() or to self.errors, never lost in the thread.
        except BaseException as exc:  # noqa: BLE001
            if not self._ready.is_set():
                self._startup_error = exc
                self._ready.set()
            else:
                self.errors.append(exc)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._release_event = asyncio.Event()
        async with self._handler, _LoopbackServer(self._handler, host=self.host) as server:
            self.port = server.port
            self._ready.set()
            await self._stop_event.wait()
            self._release_event.set()  # let held (delayed) requests finish before the server closes

    # -- request log

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def writes(self) -> list[Recorded]:
        """Requests whose method is not GET/HEAD/OPTIONS (dry runs included: check ``.dry_run``)."""
        return [r for r in self.requests if r.method not in READ_METHODS]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- state

    def add_resource(
        self,
        api_version: str,
        plural: str,
        kind: str,
        *,
        namespaced: bool = True,
        subresources: tuple[str, ...] = (),
    ) -> ResourceType:
        """Serve another kind (a CRD's, say): discovery, storage and all object endpoints."""
        group, _, version = api_version.rpartition("/")
        rt = ResourceType(group, version, plural, kind, namespaced, subresources)
        with self._lock:
            self._register(rt)
        return rt

    def put(self, obj: Mapping[str, Any]) -> JsonDict:
        """Store ``obj`` as is (no request logged), filling in uid/creationTimestamp/resourceVersion/generation."""
        rt = self._type_of(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        new = copy.deepcopy(dict(obj))
        meta = new.setdefault("metadata", {})
        name, namespace = meta.get("name"), meta.get("namespace")
        if not name:
            raise ValueError("put(): metadata.name is required")
        if rt.namespaced and not namespace:
            raise ValueError(f"put(): {rt.kind} is namespaced: metadata.namespace is required")
        if not rt.namespaced:
            meta.pop("namespace", None)
        with self._lock:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta.setdefault("generation", 1)
            meta["resourceVersion"] = self._next_revision()
            self._objects[self._key(rt, namespace, name)] = new
            return copy.deepcopy(new)

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> JsonDict | None:
        rt = self._type_of(api_version, kind)
        with self._lock:
            obj = self._objects.get(self._key(rt, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def objects(self) -> list[JsonDict]:
        with self._lock:
            return [copy.deepcopy(o) for _, o in sorted(self._objects.items())]

    def set_logs(self, namespace: str, pod: str, text: str, container: str | None = None) -> None:
        """Serve ``text`` as the pod's (container's) log; seeds a running Pod with that container if missing."""
        with self._lock:
            self._logs[(namespace, pod, container)] = text
            if self.get("v1", "Pod", namespace, pod) is None:
                self.put(
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {"name": pod, "namespace": namespace},
                        "spec": {
                            "containers": [{"name": container or "main", "image": "example.invalid/app:1"}]
                        },
                        "status": {"phase": "Running"},
                    }
                )

    # -- fault injection

    def fail_next(
        self,
        status: int,
        body: JsonDict | str | bytes | None = None,
        *,
        count: int | None = 1,
        path_contains: str | None = None,
        match: Callable[[Recorded], bool] | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests (None: all) with ``status`` and ``body``.

        ``body`` defaults to a ``Status`` for the code; pass ``conflict_status(...)``, ``forbidden_status(...)``
        or ``invalid_status(...)`` for realistic ones. Authentication is still checked first. Discovery requests
        count too, so narrow with ``path_contains`` or ``match`` (e.g. ``lambda r: r.is_apply and not r.dry_run``).
        """
        with self._lock:
            self._fail_rules.append(_Rule(count, path_contains, match, status=status, body=body))

    def delay(
        self,
        seconds: float | None,
        *,
        count: int | None = None,
        path_contains: str | None = None,
        match: Callable[[Recorded], bool] | None = None,
    ) -> None:
        """Hold matching requests ``seconds`` (None: until ``release()``/teardown) before answering."""
        with self._lock:
            self._delay_rules.append(_Rule(count, path_contains, match, seconds=seconds))

    def release(self) -> None:
        """Drop the delay rules and let every held request proceed now."""
        with self._lock:
            self._delay_rules.clear()
        loop, event = self._loop, self._release_event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    def clear_faults(self) -> None:
        with self._lock:
            self._fail_rules.clear()
            self._delay_rules.clear()

    # -- internals (the handler calls these on the server thread, always under self._lock)

    def _register(self, rt: ResourceType) -> None:
        self._resources[(rt.group, rt.version, rt.plural)] = rt
        self._handler.resources[kmock.resource(rt.group, rt.version, rt.plural)] = kmock.ResourceInfo(
            kind=rt.kind,
            singular=rt.kind.lower(),
            namespaced=rt.namespaced,
            verbs=set(_VERBS),
            shortnames=set(rt.short_names),
            subresources=set(rt.subresources),
        )

    def _type_of(self, api_version: str, kind: str) -> ResourceType:
        for rt in self._resources.values():
            if rt.api_version == api_version and rt.kind == kind:
                return rt
        raise ValueError(f"unknown kind {api_version}/{kind}: add_resource() it first")

    @staticmethod
    def _key(rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str, str, str]:
        return (rt.api_version, rt.kind, (namespace or "") if rt.namespaced else "", name)

    def _next_revision(self) -> str:
        self._revision += 1
        return str(self._revision)

    def _take_rule(self, rules: list[_Rule], rec: Recorded) -> _Rule | None:
        with self._lock:
            for rule in rules:
                if rule.matches(rec):
                    if rule.count is not None:
                        rule.count -= 1
                        if rule.count <= 0:
                            rules.remove(rule)
                    return rule
        return None

    async def _hold(self, seconds: float | None) -> None:
        event = self._release_event
        assert event is not None
        if seconds is None:
            await event.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=seconds)


class _LoopbackServer(kmock.Server):
    """kmock's server without its aiohttp client session and its global aiohttp DNS interceptor."""

    async def __aenter__(self) -> Self:
        if self._managed_server is not None:
            raise RuntimeError("The server can be started/entered only once.")
        self._managed_server = self._server_cls(self.handler, host=self._host, port=self._port)
        await self._managed_server.__aenter__()
        self.handler.servers.append(self)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.handler.servers.remove(self)
        server, self._managed_server = self._managed_server, None
        if server is not None:
            await server.__aexit__(exc_type, exc, tb)


@attrs.define(kw_only=True)
class _KubeHandler(kmock.KubernetesScaffold):
    """kmock's Kubernetes scaffold (recording, discovery, Status errors) plus the object semantics."""

    emulator: KubeEmulator = attrs.field(repr=False)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # Like kmock's RawHandler.__call__ (parse, record in self.requests, handle, render errors as Status),
        # but kmock 0.8's path parser raises on e.g. "/api/v1/namespaces" (a list of a cluster-scoped kind),
        # so such requests are recorded without kmock's Kubernetes fields (our _handle parses paths itself).
        await raw_request.read()
        try:
            try:
                request = await rendering.Request._parse(raw_request, id=len(self._requests))
            except ValueError:
                request = rendering.Request(
                    id=len(self._requests),
                    raw_request=raw_request,
                    url=raw_request.url,
                    method=raw_request.method,
                    params=dict(raw_request.query),
                    headers=dict(raw_request.headers),
                    body=await raw_request.read(),
                )
            self._requests.append(request)
            return await self._handle(request)
        # Like kmock: any failure is answered as a 500 Status; it is also kept in emulator.errors (fails the test).
        except Exception as exc:  # noqa: BLE001
            if not any(e is exc for e in self.emulator.errors):
                self.emulator.errors.append(exc)
            return await self._render_error(exc)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        emu = self.emulator
        rec = _record(request)
        with emu._lock:
            emu._requests.append(rec)
        try:
            response = await self._dispatch(request, rec)
        except _StatusError as exc:
            response = aiohttp.web.json_response(exc.body, status=exc.code)
        except Exception as exc:
            emu.errors.append(exc)
            raise
        rec.status = response.status
        return response

    async def _dispatch(self, request: rendering.Request, rec: Recorded) -> aiohttp.web.StreamResponse:
        emu = self.emulator
        if rec.headers.get("authorization") != f"Bearer {emu.token}":
            return aiohttp.web.json_response(status_body(401, "Unauthorized"), status=401)
        delay = emu._take_rule(emu._delay_rules, rec)
        if delay is not None:
            await emu._hold(delay.seconds)
        fail = emu._take_rule(emu._fail_rules, rec)
        if fail is not None:
            return _render_fault(fail)
        path = rec.path.rstrip("/") or "/"
        if path == "/version":
            return aiohttp.web.json_response(SERVER_VERSION)
        target = _parse_path(path)
        if target is None or target.plural is None:
            if self._is_discovery(path):
                return await super()._handle(request)
            raise _fail(404, "the server could not find the requested resource")
        with emu._lock:
            return _Ops(emu, rec, target).run()

    def _is_discovery(self, path: str) -> bool:
        if path in ("/", "/api", "/apis", "/api/v1"):
            return True
        parts = path.strip("/").split("/")
        if parts[0] != "apis" or len(parts) not in (2, 3):
            return False
        known = self.emulator._resources.values()
        return any(rt.group == parts[1] and (len(parts) == 2 or rt.version == parts[2]) for rt in known)

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        payload = await super()._serve_version(request)
        assert isinstance(payload, dict)
        for entry in payload["resources"]:
            sub = entry["name"].partition("/")[2]
            if sub:
                entry["verbs"] = _SUBRESOURCE_VERBS.get(sub, ["get"])
            entry["verbs"] = sorted(entry["verbs"])
            entry["singularName"] = "" if sub else entry["singularName"]
        payload["resources"].sort(key=lambda e: e["name"])
        payload["groupVersion"] = payload["groupVersion"].lstrip("/")  # kmock says "/v1" for the core group
        return payload


def _record(request: rendering.Request) -> Recorded:
    headers = {k.lower(): v for k, v in request.headers.items()}
    body = request.body
    parsed: Any = request.data if isinstance(request.data, (dict, list)) else None
    if parsed is None and body:
        with contextlib.suppress(ValueError, yaml.YAMLError):
            if headers.get("content-type", "").startswith(APPLY_CONTENT_TYPE):
                parsed = yaml.safe_load(body)
            else:
                parsed = json.loads(body)
    return Recorded(
        method=str(request.method.value if hasattr(request.method, "value") else request.method).upper(),
        path=request.url.path,
        params=dict(request.params),
        headers=headers,
        body=body,
        json=parsed,
    )


def _render_fault(rule: _Rule) -> aiohttp.web.Response:
    body = rule.body
    if body is None:
        body = status_body(rule.status, f"injected failure ({rule.status})")
    if isinstance(body, dict):
        return aiohttp.web.json_response(body, status=rule.status)
    data = body.encode() if isinstance(body, str) else body
    return aiohttp.web.Response(body=data, status=rule.status, content_type="text/plain")


@dataclass(frozen=True)
class _Target:
    group: str
    version: str
    plural: str | None
    namespace: str | None
    name: str | None
    subresource: str | None


def _parse_path(path: str) -> _Target | None:
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return _Target(group, version, None, None, None, None)
    return _Target(
        group, version, rest[0], namespace, rest[1] if len(rest) > 1 else None, "/".join(rest[2:]) or None
    )


# ---------------------------------------------------------------------------------------------- operations


@dataclass
class _Ops:
    """One request's object operation (runs on the server thread with the emulator lock held)."""

    emu: KubeEmulator
    rec: Recorded
    target: _Target
    rt: ResourceType = field(init=False)

    def run(self) -> aiohttp.web.StreamResponse:
        t = self.target
        rt = self.emu._resources.get((t.group, t.version, t.plural or ""))
        if rt is None:
            raise _fail(404, "the server could not find the requested resource")
        self.rt = rt
        if rt.namespaced != (t.namespace is not None) and t.name is not None:
            raise _fail(404, "the server could not find the requested resource")
        if not rt.namespaced and t.namespace is not None:
            raise _fail(404, "the server could not find the requested resource")
        dry_run = self.rec.params.get("dryRun")
        if dry_run not in (None, "All"):
            raise _fail(400, f"Invalid dry run value: {dry_run!r}: valid values are 'All'")
        method = self.rec.method
        if t.subresource is not None:
            return self._subresource()
        if t.name is None:
            if method == "GET":
                return self._list()
            if method == "POST":
                return self._create()
            raise _fail(405, f"the server does not allow this method on the requested resource ({method})")
        if method == "GET":
            return _json(self._stored_or_404(t.name))
        if method == "PATCH":
            return self._patch()
        if method == "PUT":
            return self._replace()
        if method == "DELETE":
            return self._delete()
        raise _fail(405, f"the server does not allow this method on the requested resource ({method})")

    # -- helpers

    @property
    def dry_run(self) -> bool:
        return self.rec.params.get("dryRun") == "All"

    def _key(self, name: str) -> tuple[str, str, str, str]:
        return self.emu._key(self.rt, self.target.namespace, name)

    def _stored(self, name: str) -> JsonDict | None:
        return self.emu._objects.get(self._key(name))

    def _stored_or_404(self, name: str) -> JsonDict:
        obj = self._stored(name)
        if obj is None:
            raise _not_found(self.rt, name)
        return obj

    def _body(self) -> JsonDict:
        rec = self.rec
        try:
            if rec.content_type == APPLY_CONTENT_TYPE:
                data = yaml.safe_load(rec.body or b"{}")
            else:
                data = json.loads(rec.body or b"{}")
        except (ValueError, yaml.YAMLError) as exc:
            raise _fail(400, f"error decoding request body: {exc}") from exc
        if not isinstance(data, dict):
            raise _fail(400, "the request body must be an object")
        return data

    def _check_identity(self, body: JsonDict, name: str | None, *, require_type: bool) -> None:
        rt, t = self.rt, self.target
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if require_type and (not api_version or not kind):
            raise _fail(
                400, "Object 'Kind' is missing in the request body" if not kind else "apiVersion is required"
            )
        if (api_version and api_version != rt.api_version) or (kind and kind != rt.kind):
            raise _fail(
                400,
                f"the body of the request was in an unknown format: {api_version}/{kind} is not {rt.api_version}/{rt.kind}",
            )
        meta = body.get("metadata") or {}
        if not isinstance(meta, dict):
            raise _fail(400, "metadata must be an object")
        if name is not None and meta.get("name") not in (None, name):
            raise _fail(
                400,
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})",
            )
        if t.namespace is not None and meta.get("namespace") not in (None, t.namespace):
            raise _fail(
                400, "the namespace of the provided object does not match the namespace sent on the request"
            )
        if (
            self.emu.strict_namespaces
            and t.namespace is not None
            and self.emu.get("v1", "Namespace", None, t.namespace) is None
        ):
            raise _fail(
                404,
                f'namespaces "{t.namespace}" not found',
                details={"name": t.namespace, "kind": "namespaces"},
            )

    def _validate(self, obj: JsonDict) -> None:
        name = obj["metadata"]["name"]
        if len(name) > 253 or not _NAME_RE.fullmatch(name):
            raise _StatusError(
                422,
                invalid_status(
                    self.rt.kind, name, [("metadata.name", f'Invalid value: "{name}": {_NAME_MESSAGE}')]
                ),
            )

    def _check_rv(self, body: JsonDict, current: JsonDict | None, name: str) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and (current is None or current["metadata"].get("resourceVersion") != wanted):
            raise _fail(
                409,
                f'Operation cannot be fulfilled on {self.rt.group_plural} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                reason="Conflict",
                details=_details(self.rt, name),
            )

    def _manager(self, *, required: bool) -> str:
        manager = self.rec.params.get("fieldManager")
        if manager:
            return manager
        if required:
            raise _fail(
                422,
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
                reason="Invalid",
                details={
                    "group": "meta.k8s.io",
                    "kind": "PatchOptions",
                    "causes": [
                        {
                            "reason": "FieldValueRequired",
                            "message": "Required value: is required for apply patch",
                            "field": "fieldManager",
                        }
                    ],
                },
            )
        agent = self.rec.headers.get("user-agent", "unknown")
        return agent.split("/", 1)[0] or "unknown"

    def _new_object(self, body: JsonDict, name: str) -> JsonDict:
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = self.rt.api_version, self.rt.kind
        meta = obj.setdefault("metadata", {})
        meta["name"] = name
        if self.rt.namespaced:
            meta["namespace"] = self.target.namespace
        for key in ("resourceVersion", "uid", "managedFields", "creationTimestamp", "generation"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        return obj

    def _commit(
        self, name: str, old: JsonDict | None, new: JsonDict, *, status: int = 200
    ) -> aiohttp.web.Response:
        """Store ``new`` (unless dry run or unchanged) with fresh resourceVersion/generation, and answer it."""
        if old is not None and _comparable(old) == _comparable(new):
            return _json(old, status)
        meta = new["metadata"]
        if old is not None:
            meta["uid"] = old["metadata"].get("uid")
            meta["creationTimestamp"] = old["metadata"].get("creationTimestamp")
            generation = int(old["metadata"].get("generation", 1))
            if _spec_part(old) != _spec_part(new):
                generation += 1
            meta["generation"] = generation
        if self.dry_run:
            if old is None:
                meta.pop("resourceVersion", None)
            else:
                meta["resourceVersion"] = old["metadata"].get("resourceVersion")
            return _json(new, status)
        meta["resourceVersion"] = self.emu._next_revision()
        self.emu._objects[self._key(name)] = new
        return _json(new, status)

    # -- verbs

    def _list(self) -> aiohttp.web.Response:
        params = self.rec.params
        if params.get("watch") in ("true", "1"):
            raise _fail(400, "watch is not emulated by the kmock-based test emulator")
        label_requirements = _parse_label_selector(params.get("labelSelector", ""))
        field_checks = _parse_field_selector(params.get("fieldSelector", ""))
        items = []
        for (api_version, kind, namespace, _name), obj in sorted(self.emu._objects.items()):
            if (api_version, kind) != (self.rt.api_version, self.rt.kind):
                continue
            if self.target.namespace is not None and namespace != self.target.namespace:
                continue
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if _labels_match(labels, label_requirements) and all(c(obj) for c in field_checks):
                item = copy.deepcopy(obj)
                item.pop("apiVersion", None)
                item.pop("kind", None)
                items.append(item)
        offset = 0
        if params.get("continue"):
            try:
                offset = int(json.loads(base64.b64decode(params["continue"]))["offset"])
            except (ValueError, KeyError, TypeError, binascii.Error) as exc:
                raise _fail(400, "invalid continue token", reason="BadRequest") from exc
        meta: JsonDict = {"resourceVersion": str(self.emu._revision)}
        limit = int(params.get("limit") or 0)
        page = items[offset:]
        if limit and len(page) > limit:
            page = page[:limit]
            meta["continue"] = base64.b64encode(json.dumps({"offset": offset + limit}).encode()).decode()
            meta["remainingItemCount"] = len(items) - offset - limit
        return _json(
            {
                "kind": f"{self.rt.kind}List",
                "apiVersion": self.rt.api_version,
                "metadata": meta,
                "items": page,
            }
        )

    def _create(self) -> aiohttp.web.Response:
        body = self._body()
        self._check_identity(body, None, require_type=True)
        meta = body.get("metadata") or {}
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = meta["generateName"] + secrets.token_hex(3)[:5]
        if not name:
            raise _StatusError(
                422,
                invalid_status(
                    self.rt.kind, "", [("metadata.name", "Required value: name or generateName is required")]
                ),
            )
        if self._stored(name) is not None:
            raise _fail(
                409,
                f'{self.rt.group_plural} "{name}" already exists',
                reason="AlreadyExists",
                details=_details(self.rt, name),
            )
        new = self._new_object(body, name)
        self._validate(new)
        _set_owner(
            new, self._manager(required=False), "Update", self.rt.api_version, _leaf_paths(body), replace=True
        )
        return self._commit(name, None, new, status=201)

    def _replace(self) -> aiohttp.web.Response:
        name = self.target.name
        assert name is not None
        body = self._body()
        self._check_identity(body, name, require_type=True)
        old = self._stored_or_404(name)
        self._check_rv(body, old, name)
        new = copy.deepcopy(body)
        new["metadata"] = {**copy.deepcopy(body.get("metadata") or {}), "name": name}
        if self.rt.namespaced:
            new["metadata"]["namespace"] = self.target.namespace
        new["metadata"]["managedFields"] = copy.deepcopy(old["metadata"].get("managedFields", []))
        self._validate(new)
        self._take_changed(old, new, self._manager(required=False))
        return self._commit(name, old, new)

    def _patch(self) -> aiohttp.web.Response:
        name = self.target.name
        assert name is not None
        ctype = self.rec.content_type
        if ctype == APPLY_CONTENT_TYPE:
            return self._apply(name)
        if ctype not in MERGE_CONTENT_TYPES:
            raise _fail(415, "415: Unsupported Media Type", reason="UnsupportedMediaType", details={})
        body = self._body()
        self._check_identity(body, name, require_type=False)
        old = self._stored_or_404(name)
        self._check_rv(body, old, name)
        new = _merge(old, body, null_deletes=True)
        new["metadata"]["name"] = name
        self._validate(new)
        self._take_changed(old, new, self._manager(required=False))
        return self._commit(name, old, new)

    def _apply(self, name: str) -> aiohttp.web.Response:
        manager = self._manager(required=True)
        body = self._body()
        self._check_identity(body, name, require_type=True)
        if "status" in self.rt.subresources:
            body.pop("status", None)
        old = self._stored(name)
        self._check_rv(body, old, name)
        applied = _leaf_paths(body)
        force = self.rec.params.get("force") in ("true", "1")
        if old is None:
            new = self._new_object(body, name)
        else:
            new = _merge(old, body, null_deletes=False)
            new["metadata"]["name"] = name
            self._resolve_conflicts(old, new, manager, applied, force=force)
            previous = _owned(old).get((manager, "Apply"), set())
            others = set().union(*(p for who, p in _owned(new).items() if who != (manager, "Apply")))
            for path in previous - applied:
                if not any(_is_under(path, o) for o in others):
                    _del_path(new, path)
        self._validate(new)
        _set_owner(new, manager, "Apply", self.rt.api_version, applied, replace=True)
        return self._commit(name, old, new, status=200 if old is not None else 201)

    def _resolve_conflicts(
        self, old: JsonDict, new: JsonDict, manager: str, applied: set[Path], *, force: bool
    ) -> None:
        conflicts: dict[tuple[str, str, str], list[str]] = {}
        entries = new["metadata"].get("managedFields") or []
        for entry in entries:
            who = (entry.get("manager", ""), entry.get("operation", ""))
            if who == (manager, "Apply"):
                continue
            owned = _fields_to_paths(entry.get("fieldsV1"))
            for path in sorted(applied):
                if any(_is_under(path, o) for o in owned) and _get_path(old, path) != _get_path(new, path):
                    key = (who[0], who[1], entry.get("apiVersion", ""))
                    conflicts.setdefault(key, []).append(_dotted(path))
        if not conflicts:
            return
        if force:
            for entry in entries:
                if (entry.get("manager"), entry.get("operation")) == (manager, "Apply"):
                    continue
                owned = _fields_to_paths(entry.get("fieldsV1"))
                kept = {o for o in owned if not any(_is_under(o, p) and len(o) >= len(p) for p in applied)}
                entry["fieldsV1"] = _paths_to_fields(kept)
            new["metadata"]["managedFields"] = [e for e in entries if e.get("fieldsV1")]
            return
        if len(conflicts) == 1:
            (owner, operation, owner_version), fields = next(iter(conflicts.items()))
            by_update = owner_version if operation == "Update" else None
            raise _StatusError(409, conflict_status(owner, fields, api_version=by_update))
        total = sum(len(f) for f in conflicts.values())
        parts = []
        for (m, o, v), fs in conflicts.items():
            label = f'"{m}" using {v}' if o == "Update" else f'"{m}"'
            parts.append(f"conflicts with {label}:\n" + "\n".join(f"- {f}" for f in fs))
        causes = [
            {
                "reason": "FieldManagerConflict",
                "message": f'conflict with "{m}"' + (f" using {v}" if o == "Update" else ""),
                "field": f,
            }
            for (m, o, v), fs in conflicts.items()
            for f in fs
        ]
        raise _StatusError(
            409,
            status_body(
                409,
                f"Apply failed with {total} conflicts: " + "\n".join(parts),
                reason="Conflict",
                details={"causes": causes},
            ),
        )

    def _take_changed(self, old: JsonDict, new: JsonDict, manager: str) -> None:
        changed = {p for p in _leaf_paths(new) if _get_path(old, p) != _get_path(new, p)}
        entries = new["metadata"].get("managedFields") or []
        for entry in entries:
            if (entry.get("manager"), entry.get("operation")) == (manager, "Update"):
                continue
            owned = _fields_to_paths(entry.get("fieldsV1"))
            entry["fieldsV1"] = _paths_to_fields({o for o in owned if o not in changed})
        new["metadata"]["managedFields"] = [e for e in entries if e.get("fieldsV1")]
        _set_owner(new, manager, "Update", self.rt.api_version, changed, replace=False)

    def _delete(self) -> aiohttp.web.Response:
        name = self.target.name
        assert name is not None
        old = self._stored_or_404(name)
        if not self.dry_run:
            del self.emu._objects[self._key(name)]
            if self.rt.kind == "Namespace" and self.rt.group == "":
                for key in [k for k in self.emu._objects if k[2] == name]:
                    del self.emu._objects[key]
        details = _details(self.rt, name) | {"uid": old["metadata"].get("uid")}
        return _json(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
        )

    def _subresource(self) -> aiohttp.web.StreamResponse:
        t = self.target
        assert t.name is not None
        if t.subresource not in self.rt.subresources or self.rec.method != "GET":
            raise _fail(404, "the server could not find the requested resource")
        obj = self._stored_or_404(t.name)
        if t.subresource == "log":
            return self._logs(obj)
        return _json(obj)

    def _logs(self, pod: JsonDict) -> aiohttp.web.Response:
        params, t = self.rec.params, self.target
        assert t.name is not None
        assert t.namespace is not None
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        container = params.get("container")
        if container is None and len(containers) > 1:
            raise _fail(
                400,
                f"a container name must be specified for pod {t.name}, choose one of: [{' '.join(map(str, containers))}]",
            )
        if container is not None and containers and container not in containers:
            raise _fail(400, f"container {container} is not valid for pod {t.name}")
        logs = self.emu._logs
        text = logs.get((t.namespace, t.name, container))
        if text is None and (container is None or container == (containers[0] if containers else None)):
            text = logs.get((t.namespace, t.name, None))
        if text is None:
            text = (
                next((v for (ns, p, _c), v in logs.items() if (ns, p) == (t.namespace, t.name)), "")
                if container is None
                else ""
            )
        if params.get("tailLines"):
            tail = int(params["tailLines"])
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-tail:]) if tail > 0 else ""
        data = text.encode()
        if params.get("limitBytes"):
            data = data[: int(params["limitBytes"])]
        return aiohttp.web.Response(body=data, status=200, content_type="text/plain")


def _json(obj: JsonDict, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.json_response(copy.deepcopy(obj), status=status)


def _owned(obj: JsonDict) -> dict[tuple[str, str], set[Path]]:
    return {
        (e.get("manager", ""), e.get("operation", "")): _fields_to_paths(e.get("fieldsV1"))
        for e in (obj.get("metadata") or {}).get("managedFields") or []
    }


def _set_owner(
    obj: JsonDict, manager: str, operation: str, api_version: str, paths: set[Path], *, replace: bool
) -> None:
    meta = obj.setdefault("metadata", {})
    entries = [
        e
        for e in meta.get("managedFields") or []
        if (e.get("manager"), e.get("operation")) != (manager, operation)
    ]
    previous = next(
        (
            e
            for e in meta.get("managedFields") or []
            if (e.get("manager"), e.get("operation")) == (manager, operation)
        ),
        None,
    )
    owned = set(paths) if replace or previous is None else _fields_to_paths(previous.get("fieldsV1")) | paths
    if owned:
        entries.append(
            {
                "manager": manager,
                "operation": operation,
                "apiVersion": api_version,
                "time": _now(),
                "fieldsType": "FieldsV1",
                "fieldsV1": _paths_to_fields(owned),
            }
        )
    meta["managedFields"] = entries


def _comparable(obj: JsonDict) -> JsonDict:
    out = copy.deepcopy(obj)
    meta = out.get("metadata") or {}
    for entry in meta.get("managedFields") or []:
        entry.pop("time", None)
    meta.pop("resourceVersion", None)
    meta.pop("generation", None)
    return out


def _spec_part(obj: JsonDict) -> JsonDict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


# ---------------------------------------------------------------------------------------------- fixtures


@contextlib.contextmanager
def running_kube_emulator(*, token: str | None = None) -> Iterator[KubeEmulator]:
    """Start an emulator for the ``with`` block; release held requests and stop it on the way out."""
    emulator = KubeEmulator(token=token).start()
    try:
        yield emulator
    finally:
        emulator.release()
        emulator.stop()


@pytest.fixture
def kube_emulator() -> Iterator[KubeEmulator]:
    """A fresh emulator per test; the test fails if the emulator itself raised while serving."""
    with running_kube_emulator() as emulator:
        yield emulator
    if emulator.errors:
        pytest.fail(f"the kube emulator raised while serving: {emulator.errors!r}")
