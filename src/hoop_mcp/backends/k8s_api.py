"""The Kubernetes API seam: a small async HTTP client (httpx) with the server's own credential.

Only the calls the tools need: discovery, get, list, server-side apply (always with a field
manager, never forced), delete, pod logs. Library and HTTP failures are mapped here, once, to the
project's errors (as httpx maps httpcore's): nothing above this module sees httpx.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from hoop_mcp.core.errors import BackendError, BackendRejected, BackendUnavailable

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
#: Largest response body read (a list, an object); logs have their own, smaller cap.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
_MESSAGE_CHARS = 1_000


@dataclass(frozen=True, slots=True)
class ApiResource:
    """One resource as the API server's discovery describes it."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool
    verbs: tuple[str, ...]

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
        if sub is not None:
            base += f"/{sub}"
        return base


def _status(response: httpx.Response, body: bytes) -> tuple[str, str, list[dict[str, Any]]]:
    """(message, reason, causes) of a Kubernetes ``Status`` body; raw text when it is not one."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip(), response.reason_phrase, []
    if not isinstance(data, dict):
        return str(data), response.reason_phrase, []
    details = data.get("details") if isinstance(data.get("details"), dict) else {}
    causes = details.get("causes") if isinstance(details, dict) else None
    return (
        str(data.get("message") or response.reason_phrase),
        str(data.get("reason") or ""),
        [c for c in causes if isinstance(c, dict)] if isinstance(causes, list) else [],
    )


class KubeApi:
    """One API server, one credential. Every method raises ``BackendError`` subclasses only."""

    def __init__(
        self,
        *,
        connection: str,
        server: str,
        token: str,
        ca_file: Path | None,
        timeout_s: float,
        field_manager: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.connection = connection
        self.server = server.rstrip("/")
        self.field_manager = field_manager
        self.timeout_s = timeout_s
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            verify = ssl.create_default_context(cafile=str(ca_file))
        self._client = httpx.AsyncClient(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout_s),
            verify=verify,
            transport=transport,
            follow_redirects=False,
            trust_env=False,
        )
        self._discovery: dict[str, dict[str, ApiResource] | None] = {}
        self._lock = anyio.Lock()

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- plumbing ----------------------------------------------------------------------------------
    async def _send(
        self,
        method: str,
        path: str,
        *,
        action: str,
        params: Mapping[str, str | int] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        limit: int = MAX_RESPONSE_BYTES,
        missing_ok: bool = False,
        truncate: bool = False,
    ) -> tuple[httpx.Response, bytes] | None:
        headers = {"Content-Type": content_type} if content_type else None
        where = f"the Kubernetes API server of connection {self.connection!r}"
        try:
            request = self._client.build_request(
                method, path, params=params, content=content, headers=headers
            )
            response = await self._client.send(request, stream=True)
            try:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_raw():
                    chunks.append(chunk[: max(0, limit + 1 - size)])
                    size += len(chunk)
                    if size > limit:
                        break
                body = b"".join(chunks)
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            raise BackendUnavailable(
                f"{where} did not answer within {self.timeout_s:g} s ({action})",
                hint="the cluster may be overloaded or unreachable; try again later",
                details={"rule_id": "k8s.timeout"},
            ) from None
        except httpx.HTTPError as exc:
            raise BackendUnavailable(
                f"{where} cannot be reached ({action}): {type(exc).__name__}",
                hint="an operator must check the connection's server address and the network",
                details={"rule_id": "k8s.unreachable"},
            ) from None
        if size > limit and not (truncate and response.status_code < 300):
            raise BackendRejected(
                f"{where} sent more than {limit} bytes ({action}); the answer was not read",
                hint="narrow the request (a label selector, a namespace, fewer log lines)",
                details={"rule_id": "k8s.response_too_large"},
            )
        if response.status_code < 300:
            return response, body
        if response.status_code == 404 and missing_ok:
            return None
        raise self._error(response, body, action=action)

    def _error(self, response: httpx.Response, body: bytes, *, action: str) -> BackendError:
        message, reason, causes = _status(response, body)
        message = message[:_MESSAGE_CHARS]
        code = response.status_code
        said = f"the API server answered {code} {reason or response.reason_phrase} ({action}): {message}"
        if code == 401:
            return BackendRejected(
                f"the API server refused the server's own credential (connection {self.connection!r}, "
                f"{action}): authentication failed",
                hint="an operator must check the connection's token",
                details={"rule_id": "k8s.auth_failed"},
            )
        if code == 403:
            return BackendRejected(
                f"the API server denied the server's own credential (connection {self.connection!r}, "
                f"{action}): {message}",
                hint="the connection's service account lacks this permission (RBAC); an operator must "
                "grant it, or the call is not meant to run here",
                details={"rule_id": "k8s.forbidden"},
            )
        if code == 409:
            if message.startswith("Apply failed with") or any("conflict with" in str(c) for c in causes):
                fields = [str(c.get("field")) for c in causes if c.get("field")][:20]
                return BackendRejected(
                    f"field manager conflict ({action}): {message}",
                    hint="other field managers own "
                    + (", ".join(fields) if fields else "these fields")
                    + "; remove them from your manifest or ask their owner to release them "
                    "(hoop-mcp never forces ownership)",
                    details={"rule_id": "k8s.field_manager_conflict", "fields": fields},
                )
            return BackendRejected(
                f"the object changed on the server since it was planned ({action}): {message}",
                hint="look at the new plan (kubectl_diff) and apply again",
                details={"rule_id": "k8s.conflict"},
            )
        if code in (400, 415, 422):
            listed = "; ".join(f"{c.get('field', '')}: {c.get('message', '')}"[:200] for c in causes[:10])
            return BackendRejected(
                f"the API server rejected the object as invalid ({action}): {message}"
                + (f" [{listed}]" if listed and listed not in message else ""),
                details={"rule_id": "k8s.invalid"},
            )
        if code == 404:
            return BackendRejected(said, details={"rule_id": "k8s.not_found"})
        if code == 429 or code >= 500:
            return BackendUnavailable(
                said,
                hint="the cluster is failing or overloaded; try again later",
                details={"rule_id": "k8s.server_error"},
            )
        return BackendRejected(said, details={"rule_id": "k8s.rejected"})

    @staticmethod
    def _json(body: bytes, action: str) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except ValueError:
            raise BackendUnavailable(
                f"the API server's answer is not JSON ({action})", details={"rule_id": "k8s.bad_answer"}
            ) from None
        if not isinstance(data, dict):
            raise BackendUnavailable(
                f"the API server's answer is not an object ({action})", details={"rule_id": "k8s.bad_answer"}
            )
        return data

    # -- discovery ---------------------------------------------------------------------------------
    async def _group_version(self, api_version: str) -> dict[str, ApiResource] | None:
        async with self._lock:
            if api_version in self._discovery:
                return self._discovery[api_version]
            path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            got = await self._send("GET", path, action=f"discover {api_version}", missing_ok=True)
            resources: dict[str, ApiResource] | None = None
            if got is not None:
                data = self._json(got[1], f"discover {api_version}")
                resources = {}
                for item in data.get("resources") or []:
                    if not isinstance(item, dict) or "/" in str(item.get("name", "")):
                        continue
                    kind = str(item.get("kind", ""))
                    resources.setdefault(
                        kind,
                        ApiResource(
                            api_version=api_version,
                            kind=kind,
                            plural=str(item.get("name")),
                            namespaced=bool(item.get("namespaced")),
                            verbs=tuple(str(v) for v in item.get("verbs") or ()),
                        ),
                    )
            self._discovery[api_version] = resources
            return resources

    async def resource(self, api_version: str, kind: str) -> ApiResource:
        resources = await self._group_version(api_version)
        found = resources.get(kind) if resources is not None else None
        if found is None:
            raise BackendRejected(
                f"the API server of connection {self.connection!r} does not serve kind {kind!r} in "
                f"apiVersion {api_version!r}",
                hint="check the kind and apiVersion (a custom resource needs its CRD installed)",
                details={"rule_id": "k8s.unknown_kind"},
            )
        return found

    async def version(self) -> dict[str, Any]:
        got = await self._send("GET", "/version", action="read the server version")
        return self._json(got[1], "read the server version") if got else {}

    # -- objects -----------------------------------------------------------------------------------
    async def get(self, res: ApiResource, namespace: str | None, name: str) -> dict[str, Any] | None:
        action = f"get {res.kind} {name}"
        got = await self._send("GET", res.path(namespace, name), action=action, missing_ok=True)
        return None if got is None else self._json(got[1], action)

    async def apply(
        self,
        res: ApiResource,
        namespace: str | None,
        name: str,
        body: bytes,
        *,
        dry_run: bool,
    ) -> dict[str, Any]:
        """Server-side apply (``force`` is never set: conflicts surface as errors)."""
        params: dict[str, str | int] = {"fieldManager": self.field_manager}
        if dry_run:
            params["dryRun"] = "All"
        action = f"{'dry-run ' if dry_run else ''}apply {res.kind} {name}"
        got = await self._send(
            "PATCH",
            res.path(namespace, name),
            action=action,
            params=params,
            content=body,
            content_type=APPLY_CONTENT_TYPE,
        )
        assert got is not None  # noqa: S101 - missing_ok is False
        return self._json(got[1], action)

    async def delete(
        self, res: ApiResource, namespace: str | None, name: str, *, dry_run: bool
    ) -> dict[str, Any]:
        params: dict[str, str | int] = {"dryRun": "All"} if dry_run else {}
        action = f"{'dry-run ' if dry_run else ''}delete {res.kind} {name}"
        got = await self._send("DELETE", res.path(namespace, name), action=action, params=params)
        assert got is not None  # noqa: S101 - missing_ok is False
        return self._json(got[1], action)

    async def list(
        self,
        res: ApiResource,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 500,
    ) -> dict[str, Any]:
        params: dict[str, str | int] = {"limit": limit}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        action = f"list {res.plural}"
        got = await self._send("GET", res.path(namespace), action=action, params=params)
        assert got is not None  # noqa: S101 - missing_ok is False
        return self._json(got[1], action)

    async def logs(
        self,
        namespace: str,
        pod: str,
        *,
        container: str | None,
        tail_lines: int | None,
        since_seconds: int | None,
        limit_bytes: int,
    ) -> tuple[str, bool]:
        """A pod's log, at most ``limit_bytes`` (also asked of the server); (text, truncated)."""
        # One byte more than shown: a log of exactly ``limit_bytes`` is then known to be complete.
        params: dict[str, str | int] = {"limitBytes": limit_bytes + 1}
        if container:
            params["container"] = container
        if tail_lines is not None:
            params["tailLines"] = tail_lines
        if since_seconds is not None:
            params["sinceSeconds"] = since_seconds
        action = f"read the log of pod {pod}"
        got = await self._send(
            "GET",
            f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
            action=action,
            params=params,
            limit=limit_bytes,
            truncate=True,
        )
        assert got is not None  # noqa: S101 - missing_ok is False
        body = got[1]
        return body[:limit_bytes].decode("utf-8", "replace"), len(body) > limit_bytes
