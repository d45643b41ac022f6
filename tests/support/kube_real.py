"""A real kube-apiserver for tests marked ``real_k8s`` (skipped unless ``KUBE_TEST_URL`` is set).

Fixtures (register ``tests.support.kube_real`` in ``pytest_plugins``):

    real_kube        (session) RealKube(url, token, agent_token, ca): token is an admin (system:masters),
                     agent_token a user "agent" in group "agents" with no rights until you grant some
    real_kube.admin_client() / .agent_client()   httpx.Client with base_url, bearer token and the CA
    real_kube.grant_agent("ns", verbs=[...], resources=[...], api_groups=[""])   Role + RoleBinding for "agents"
    fresh_namespace  (function) a unique namespace created with the admin token, deleted afterwards

Running them (the server is kube-apiserver v1.20.2 + etcd 3.4 built from Debian bookworm sources; 1.20 is old:
server-side apply is beta there but on by default, and there is no controller-manager, so nothing reconciles
and deleted namespaces stay "Terminating" with their objects):

    bash tools/k8s-build-apiserver.sh                    # once per machine, 4-8 min, cached in /var/cache/hoop-k8s-fixed
    HOOP_K8S_CACHE=/var/cache/hoop-k8s-fixed ../shared/tools/k8s/start-apiserver.sh /tmp/hoop-k8s
    set -a; . /tmp/hoop-k8s/env; set +a
    pytest -p no:kmock -m real_k8s
    /work/shared/tools/k8s/stop-apiserver.sh /tmp/hoop-k8s

Mind: a kube-apiserver 1.20 built with Go >= 1.18 and its vendored modern-go/reflect2 1.0.1 panics ("nil pointer
dereference" in reflect2.Type2, the client sees an HTTP/2 INTERNAL_ERROR or an empty reply) on any object with a
map in it (labels, ConfigMap data, managedFields), so the build must swap in reflect2 >= 1.0.2. The
``real_kube`` fixture checks for this and fails with a clear message instead of letting tests fail oddly.
"""

from __future__ import annotations

import os
import secrets
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

APPLY = "application/apply-patch+yaml"


@dataclass(frozen=True)
class RealKube:
    """Connection details for the real API server (from the ``KUBE_TEST_*`` environment)."""

    url: str
    token: str
    agent_token: str
    ca: Path

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def client(self, token: str, *, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            verify=self.ssl_context(),
            timeout=timeout,
        )

    def admin_client(self, *, timeout: float = 30.0) -> httpx.Client:
        """For setup and teardown only: the admin bypasses RBAC (group system:masters)."""
        return self.client(self.token, timeout=timeout)

    def agent_client(self, *, timeout: float = 30.0) -> httpx.Client:
        """As the agent user (group ``agents``): only what ``grant_agent`` allowed."""
        return self.client(self.agent_token, timeout=timeout)

    def grant_agent(
        self,
        namespace: str,
        *,
        verbs: Sequence[str],
        resources: Sequence[str],
        api_groups: Sequence[str] = ("",),
        name: str = "agents",
    ) -> None:
        """Let group ``agents`` do ``verbs`` on ``resources`` in ``namespace`` (a Role and a RoleBinding, applied)."""
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": namespace},
            "rules": [{"apiGroups": list(api_groups), "resources": list(resources), "verbs": list(verbs)}],
        }
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "agents"}],
        }
        base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
        with self.admin_client() as admin:
            for plural, obj in (("roles", role), ("rolebindings", binding)):
                _apply(admin, f"{base}/{plural}/{name}", obj)
        # The RBAC authorizer reads bindings from an informer cache: wait (bounded) until the agent is allowed.
        attrs = {"namespace": namespace, "verb": verbs[0], "group": api_groups[0], "resource": resources[0]}
        self.wait_agent_allowed(attrs)

    def wait_agent_allowed(self, resource_attributes: dict[str, str], *, timeout: float = 10.0) -> None:
        """Poll a SelfSubjectAccessReview as the agent until it is allowed; fail after ``timeout`` seconds."""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": resource_attributes},
        }
        deadline = time.monotonic() + timeout
        pause = threading.Event()  # never set: wait() is a bounded pause between polls
        with self.agent_client() as agent:
            while True:
                resp = agent.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", json=review)
                if resp.status_code == 201 and resp.json().get("status", {}).get("allowed"):
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"agent still not allowed {resource_attributes} after {timeout} s: {resp.text}"
                    )
                pause.wait(0.05)


def _apply(client: httpx.Client, path: str, obj: dict[str, Any], *, manager: str = "hoop-test-setup") -> None:
    resp = client.patch(
        path,
        params={"fieldManager": manager, "force": "true"},
        json=obj,
        headers={"Content-Type": APPLY},
    )
    if resp.status_code >= 300:
        raise AssertionError(f"apply {path} -> {resp.status_code}: {resp.text}")


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        pytest.fail(f"KUBE_TEST_URL is set but {name} is not: source the env file start-apiserver.sh wrote")
    return value


def _check_maps_work(kube: RealKube) -> None:
    """Fail fast on the reflect2 build bug (see the module docstring): a read that decodes maps must work."""
    with kube.admin_client(timeout=10.0) as admin:
        try:
            resp = admin.get("/api/v1/namespaces", params={"limit": "1"})
        except httpx.HTTPError as exc:
            pytest.fail(
                f"kube-apiserver at {kube.url} broke on a plain list ({exc!r}): likely built with the vendored "
                "modern-go/reflect2 1.0.1 under Go >= 1.18; rebuild with reflect2 >= 1.0.2"
            )
    if resp.status_code != 200:
        pytest.fail(
            f"kube-apiserver at {kube.url} is not usable: GET /api/v1/namespaces -> {resp.status_code}"
        )


@pytest.fixture(scope="session")
def real_kube() -> RealKube:
    if not os.environ.get("KUBE_TEST_URL"):
        pytest.skip("needs a real kube-apiserver: set KUBE_TEST_URL etc. (see tests/support/kube_real.py)")
    kube = RealKube(
        url=_env("KUBE_TEST_URL").rstrip("/"),
        token=_env("KUBE_TEST_TOKEN"),
        agent_token=_env("KUBE_TEST_AGENT_TOKEN"),
        ca=Path(_env("KUBE_TEST_CA")),
    )
    _check_maps_work(kube)
    return kube


@pytest.fixture
def fresh_namespace(real_kube: RealKube) -> Iterator[str]:
    """A namespace of its own for one test (deleted afterwards; without a controller-manager it only terminates)."""
    name = f"hoop-test-{secrets.token_hex(4)}"
    with real_kube.admin_client() as admin:
        resp = admin.post(
            "/api/v1/namespaces",
            json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        if resp.status_code != 201:
            raise AssertionError(f"creating namespace {name} -> {resp.status_code}: {resp.text}")
    try:
        yield name
    finally:
        with real_kube.admin_client() as admin:
            resp = admin.delete(f"/api/v1/namespaces/{name}")
            if resp.status_code not in (200, 202, 404):
                raise AssertionError(f"deleting namespace {name} -> {resp.status_code}: {resp.text}")
