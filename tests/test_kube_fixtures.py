"""The Kubernetes test fixtures do what the Kubernetes tool tests rely on (emulator always, real server if set)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import anyio
import httpx
import kubernetes
import pytest
from kubernetes.dynamic import DynamicClient

from tests.support.kube import (
    APPLY_CONTENT_TYPE,
    KubeEmulator,
    conflict_status,
    forbidden_status,
    running_kube_emulator,
)
from tests.support.kube_real import APPLY, RealKube

DEPLOY_PATH = "/apis/apps/v1/namespaces/prod/deployments/web"


def deployment(replicas: int = 2, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "prod", **meta},
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "app", "image": "app:1"}]}},
        },
    }


def client(kube: KubeEmulator, **kwargs: Any) -> httpx.Client:
    return httpx.Client(
        base_url=kube.url, headers={"Authorization": f"Bearer {kube.token}"}, timeout=10, **kwargs
    )


def apply(
    http: httpx.Client, path: str, obj: dict[str, Any], *, manager: str | None = "hoop", **params: str
) -> httpx.Response:
    if manager is not None:
        params["fieldManager"] = manager
    return http.patch(
        path, params=params, content=json.dumps(obj), headers={"Content-Type": APPLY_CONTENT_TYPE}
    )


def test_requests_without_the_bearer_token_get_401_status(kube_emulator: KubeEmulator) -> None:
    no_token = httpx.get(f"{kube_emulator.url}/api/v1/namespaces", timeout=10)
    wrong = httpx.get(
        f"{kube_emulator.url}/version", headers={"Authorization": "Bearer not-the-token"}, timeout=10
    )
    with client(kube_emulator) as http:
        ok = http.get("/api/v1/namespaces")

    assert (no_token.status_code, wrong.status_code, ok.status_code) == (401, 401, 200)
    assert no_token.json() | {"metadata": {}} == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    assert [r.status for r in kube_emulator.requests] == [401, 401, 200]


def test_each_emulator_has_its_own_random_token() -> None:
    with running_kube_emulator() as one, running_kube_emulator() as two:
        assert one.token != two.token
        assert len(one.token) >= 24
        assert one.url != two.url


def test_dry_run_apply_returns_the_would_be_object_and_stores_nothing(kube_emulator: KubeEmulator) -> None:
    with client(kube_emulator) as http:
        resp = apply(http, DEPLOY_PATH, deployment(3), dryRun="All")

    assert resp.status_code == 201
    body = resp.json()
    assert body["spec"]["replicas"] == 3
    assert body["metadata"]["uid"]
    assert body["metadata"]["managedFields"][0]["manager"] == "hoop"
    assert "resourceVersion" not in body["metadata"]
    assert kube_emulator.objects() == []
    (write,) = kube_emulator.writes()
    assert (write.dry_run, write.is_apply, write.field_manager) == (True, True, "hoop")


def test_dry_run_apply_over_an_existing_object_leaves_it_untouched(kube_emulator: KubeEmulator) -> None:
    stored = kube_emulator.put(deployment(2))
    with client(kube_emulator) as http:
        resp = apply(http, DEPLOY_PATH, deployment(5), dryRun="All")

    assert resp.status_code == 200
    assert resp.json()["spec"]["replicas"] == 5
    assert resp.json()["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert kube_emulator.get("apps/v1", "Deployment", "prod", "web") == stored


def test_apply_creates_then_merges_and_bumps_resource_version(kube_emulator: KubeEmulator) -> None:
    with client(kube_emulator) as http:
        created = apply(http, DEPLOY_PATH, deployment(2, labels={"app": "web"}))
        merged = apply(http, DEPLOY_PATH, deployment(4, labels={"app": "web"}) | {"data": None})
        again = apply(http, DEPLOY_PATH, deployment(4, labels={"app": "web"}) | {"data": None})

    assert (created.status_code, merged.status_code, again.status_code) == (201, 200, 200)
    first, second = created.json()["metadata"], merged.json()["metadata"]
    assert int(second["resourceVersion"]) > int(first["resourceVersion"])
    assert (first["generation"], second["generation"]) == (1, 2)
    assert second["uid"] == first["uid"]
    assert again.json()["metadata"]["resourceVersion"] == second["resourceVersion"]  # a no-op apply
    stored = kube_emulator.get("apps/v1", "Deployment", "prod", "web")
    assert stored is not None
    assert stored["spec"]["replicas"] == 4
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == "app:1"
    assert stored["metadata"]["labels"] == {"app": "web"}


def test_apply_keeps_fields_of_other_managers_and_drops_fields_it_stopped_applying(
    kube_emulator: KubeEmulator,
) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}}
    path = "/api/v1/namespaces/prod/configmaps/cfg"
    with client(kube_emulator) as http:
        assert apply(http, path, cm).status_code == 201
        other = {**cm, "data": {"c": "3"}}
        assert apply(http, path, other, manager="someone-else").status_code == 200
        assert apply(http, path, {**cm, "data": {"a": "1"}}).status_code == 200

    stored = kube_emulator.get("v1", "ConfigMap", "prod", "cfg")
    assert stored is not None
    assert stored["data"] == {"a": "1", "c": "3"}
    managers = {e["manager"]: e["fieldsV1"] for e in stored["metadata"]["managedFields"]}
    assert managers == {"hoop": {"f:data": {"f:a": {}}}, "someone-else": {"f:data": {"f:c": {}}}}


def test_apply_with_a_stale_resource_version_is_a_409_conflict(kube_emulator: KubeEmulator) -> None:
    kube_emulator.put(deployment(2))
    with client(kube_emulator) as http:
        resp = apply(http, DEPLOY_PATH, deployment(3, resourceVersion="999"))

    assert resp.status_code == 409
    assert resp.json()["reason"] == "Conflict"
    assert "the object has been modified" in resp.json()["message"]
    stored = kube_emulator.get("apps/v1", "Deployment", "prod", "web")
    assert stored is not None
    assert stored["spec"]["replicas"] == 2


def test_applying_a_field_another_manager_owns_conflicts_unless_forced(kube_emulator: KubeEmulator) -> None:
    owned_by_kubectl = {
        "manager": "kubectl",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:replicas": {}}},
    }
    kube_emulator.put(deployment(2, managedFields=[owned_by_kubectl]))
    with client(kube_emulator) as http:
        conflict = apply(http, DEPLOY_PATH, deployment(5))
        same_value = apply(http, DEPLOY_PATH, deployment(2))
        forced = apply(http, DEPLOY_PATH, deployment(5), force="true")

    assert conflict.status_code == 409
    assert conflict.json()["message"] == (
        'Apply failed with 1 conflict: conflict with "kubectl" using apps/v1: .spec.replicas'
    )
    assert conflict.json()["details"]["causes"][0]["field"] == ".spec.replicas"
    assert same_value.status_code == 200
    assert forced.status_code == 200
    assert forced.json()["spec"]["replicas"] == 5
    assert "kubectl" not in {e["manager"] for e in forced.json()["metadata"]["managedFields"]}


def test_apply_needs_a_field_manager_and_patch_needs_a_known_content_type(
    kube_emulator: KubeEmulator,
) -> None:
    with client(kube_emulator) as http:
        no_manager = apply(http, DEPLOY_PATH, deployment(), manager=None)
        wrong_type = http.patch(DEPLOY_PATH, content=b"{}", headers={"Content-Type": "text/plain"})
        bad_name = apply(
            http, "/apis/apps/v1/namespaces/prod/deployments/Bad_Name", deployment() | {"metadata": {}}
        )

    assert (no_manager.status_code, no_manager.json()["reason"]) == (422, "Invalid")
    assert "fieldManager: Required value" in no_manager.json()["message"]
    assert (wrong_type.status_code, wrong_type.json()["reason"]) == (415, "UnsupportedMediaType")
    assert (bad_name.status_code, bad_name.json()["details"]["causes"][0]["field"]) == (422, "metadata.name")
    assert kube_emulator.objects() == []


def test_apply_accepts_a_yaml_body(kube_emulator: KubeEmulator) -> None:
    yaml_body = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  key: value\n"
    with client(kube_emulator) as http:
        resp = http.patch(
            "/api/v1/namespaces/prod/configmaps/cfg",
            params={"fieldManager": "hoop"},
            content=yaml_body,
            headers={"Content-Type": APPLY_CONTENT_TYPE},
        )

    assert resp.status_code == 201
    assert kube_emulator.requests[0].json["data"] == {"key": "value"}
    assert kube_emulator.get("v1", "ConfigMap", "prod", "cfg") is not None


def test_fail_next_answers_only_matching_requests_and_only_count_times(kube_emulator: KubeEmulator) -> None:
    body = conflict_status(
        "kubectl", [".spec.replicas"], api_version="apps/v1", name="web", kind="Deployment"
    )
    kube_emulator.fail_next(409, body, path_contains="/deployments/")
    kube_emulator.fail_next(
        403,
        forbidden_status("agent", "list", "configmaps", namespace="prod"),
        count=2,
        path_contains="/configmaps",
    )
    with client(kube_emulator) as http:
        unrelated = http.get("/api/v1/namespaces")
        failed = apply(http, DEPLOY_PATH, deployment())
        succeeded = apply(http, DEPLOY_PATH, deployment())
        denied = [http.get("/api/v1/namespaces/prod/configmaps").status_code for _ in range(3)]

    assert unrelated.status_code == 200
    assert failed.status_code == 409
    assert failed.json()["message"] == (
        'Apply failed with 1 conflict: conflict with "kubectl" using apps/v1: .spec.replicas'
    )
    assert succeeded.status_code == 201
    assert denied == [403, 403, 200]


def test_fail_next_can_pick_requests_by_predicate(kube_emulator: KubeEmulator) -> None:
    kube_emulator.fail_next(500, match=lambda r: r.is_apply and not r.dry_run)
    with client(kube_emulator) as http:
        dry = apply(http, DEPLOY_PATH, deployment(), dryRun="All")
        real = apply(http, DEPLOY_PATH, deployment())

    assert (dry.status_code, real.status_code) == (201, 500)
    assert real.json()["reason"] == "InternalError"


def test_discovery_lists_deployments_as_namespaced_and_clusterroles_as_not(
    kube_emulator: KubeEmulator,
) -> None:
    with client(kube_emulator) as http:
        apps = http.get("/apis/apps/v1").json()
        rbac = http.get("/apis/rbac.authorization.k8s.io/v1").json()
        core = http.get("/api/v1").json()
        groups = http.get("/apis").json()
        version = http.get("/version").json()

    def by_name(resource_list: dict[str, Any]) -> dict[str, Any]:
        return {r["name"]: r for r in resource_list["resources"]}

    assert apps["kind"] == "APIResourceList"
    assert (by_name(apps)["deployments"]["kind"], by_name(apps)["deployments"]["namespaced"]) == (
        "Deployment",
        True,
    )
    assert "patch" in by_name(apps)["deployments"]["verbs"]
    assert by_name(rbac)["clusterroles"]["namespaced"] is False
    assert by_name(core)["pods/log"]["verbs"] == ["get"]
    assert core["groupVersion"] == "v1"
    assert {"apps", "batch", "networking.k8s.io", "autoscaling", "events.k8s.io"} <= {
        g["name"] for g in groups["groups"]
    }
    assert version["gitVersion"].startswith("v1.")


def test_list_filters_by_label_and_field_selectors(kube_emulator: KubeEmulator) -> None:
    for name, labels in (("a", {"app": "web", "tier": "fe"}), ("b", {"app": "web"}), ("c", {"app": "db"})):
        kube_emulator.put(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "prod", "labels": labels},
            }
        )
    for name, involved in (("e1", "web"), ("e2", "db")):
        kube_emulator.put(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": "prod"},
                "involvedObject": {"kind": "Deployment", "name": involved},
                "reason": "Scaled",
            }
        )
    with client(kube_emulator) as http:
        web = http.get("/api/v1/namespaces/prod/pods", params={"labelSelector": "app=web"}).json()
        web_fe = http.get("/api/v1/pods", params={"labelSelector": "app=web,tier=fe"}).json()
        events = http.get(
            "/api/v1/namespaces/prod/events", params={"fieldSelector": "involvedObject.name=web"}
        ).json()
        other_ns = http.get("/api/v1/namespaces/dev/pods").json()

    assert web["kind"] == "PodList"
    assert web["metadata"]["resourceVersion"]
    assert [p["metadata"]["name"] for p in web["items"]] == ["a", "b"]
    assert [p["metadata"]["name"] for p in web_fe["items"]] == ["a"]
    assert [e["metadata"]["name"] for e in events["items"]] == ["e1"]
    assert other_ns["items"] == []


def test_pod_logs_honour_container_tail_lines_and_limit_bytes(kube_emulator: KubeEmulator) -> None:
    kube_emulator.set_logs("prod", "web-0", "one\ntwo\nthree\nfour\n")
    log = "/api/v1/namespaces/prod/pods/web-0/log"
    with client(kube_emulator) as http:
        whole = http.get(log)
        tail = http.get(log, params={"tailLines": "2"})
        limited = http.get(log, params={"tailLines": "2", "limitBytes": "5"})
        named = http.get(log, params={"container": "main"})
        bad_container = http.get(log, params={"container": "nope"})
        missing_pod = http.get("/api/v1/namespaces/prod/pods/ghost/log")

    assert whole.text == "one\ntwo\nthree\nfour\n"
    assert whole.headers["content-type"].startswith("text/plain")
    assert tail.text == "three\nfour\n"
    assert limited.text == "three"
    assert named.text == whole.text
    assert bad_container.status_code == 400
    assert (missing_pod.status_code, missing_pod.json()["reason"]) == (404, "NotFound")


def test_delete_removes_the_object_and_unknown_paths_are_404_status(kube_emulator: KubeEmulator) -> None:
    kube_emulator.put(deployment())
    with client(kube_emulator) as http:
        deleted = http.delete(DEPLOY_PATH)
        again = http.get(DEPLOY_PATH)
        unknown = http.get("/apis/nope.example.com/v1/things")

    assert (deleted.status_code, deleted.json()["status"]) == (200, "Success")
    assert kube_emulator.objects() == []
    assert again.status_code == 404
    assert again.json()["message"] == 'deployments.apps "web" not found'
    assert unknown.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "the server could not find the requested resource",
        "reason": "NotFound",
        "code": 404,
    }


def test_request_log_keeps_method_path_params_lowercase_headers_and_body(kube_emulator: KubeEmulator) -> None:
    with client(kube_emulator) as http:
        http.get("/api/v1/namespaces/prod/pods", params={"labelSelector": "app=web"})
        apply(http, DEPLOY_PATH, deployment(), force="true")

    read, write = kube_emulator.requests
    assert (read.method, read.path, read.params) == (
        "GET",
        "/api/v1/namespaces/prod/pods",
        {"labelSelector": "app=web"},
    )
    assert read.headers["authorization"] == f"Bearer {kube_emulator.token}"
    assert write.params == {"force": "true", "fieldManager": "hoop"}
    assert write.content_type == APPLY_CONTENT_TYPE
    assert json.loads(write.body) == write.json == deployment()
    assert kube_emulator.writes() == [write]
    kube_emulator.clear()
    assert kube_emulator.requests == []


@pytest.mark.anyio
async def test_delay_makes_an_async_client_time_out_and_release_lets_requests_through(
    kube_emulator: KubeEmulator,
) -> None:
    kube_emulator.delay(None, path_contains="/deployments")
    headers = {"Authorization": f"Bearer {kube_emulator.token}"}
    async with httpx.AsyncClient(base_url=kube_emulator.url, headers=headers) as http:
        with anyio.fail_after(10):
            fast = await http.get("/api/v1/namespaces", timeout=5)
            with pytest.raises(httpx.ReadTimeout):
                await http.get("/apis/apps/v1/deployments", timeout=0.3)
            kube_emulator.release()
            after = await http.get("/apis/apps/v1/deployments", timeout=5)

    assert (fast.status_code, after.status_code) == (200, 200)


def test_a_held_request_does_not_block_teardown() -> None:
    with (
        running_kube_emulator() as kube,
        client(
            kube,
        ) as http,
    ):
        kube.delay(None)
        with pytest.raises(httpx.ReadTimeout):
            http.get("/api/v1/namespaces", timeout=0.3)
    assert kube.thread is not None
    assert not kube.thread.is_alive()


def test_stop_refuses_connections_and_ends_the_server_thread() -> None:
    with running_kube_emulator() as kube:
        thread = kube.thread
        assert thread is not None
        assert thread.is_alive()
        kube.stop()
        assert not thread.is_alive()
        with pytest.raises(httpx.ConnectError), client(kube) as http:
            http.get("/version")
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection((kube.host, kube.port), timeout=5),
        ):
            pass
        kube.stop()  # idempotent


def test_official_client_applies_through_dynamic_client(kube_emulator: KubeEmulator, tmp_path: Path) -> None:
    config = kubernetes.client.Configuration(
        host=kube_emulator.url,
        api_key={"BearerToken": kube_emulator.token},
        api_key_prefix={"BearerToken": "Bearer"},
    )
    with kubernetes.client.ApiClient(config) as api:
        dyn = DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))  # type: ignore[no-untyped-call]
        deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
        preview = deployments.server_side_apply(
            body=deployment(3), namespace="prod", field_manager="hoop", dry_run="All"
        )
        assert kube_emulator.objects() == []
        applied = deployments.server_side_apply(body=deployment(3), namespace="prod", field_manager="hoop")
        pods = kubernetes.client.CoreV1Api(api).list_namespaced_pod("prod")
        with pytest.raises(kubernetes.client.ApiException) as missing:
            kubernetes.client.CoreV1Api(api).read_namespaced_config_map("nope", "prod")

    assert preview.spec.replicas == 3
    assert applied.metadata.resourceVersion
    assert pods.items == []
    assert missing.value.status == 404
    write = kube_emulator.writes()[-1]
    assert write.is_apply
    assert write.params == {"fieldManager": "hoop"}
    stored = kube_emulator.get("apps/v1", "Deployment", "prod", "web")
    assert stored is not None
    assert stored["spec"]["replicas"] == 3


def test_official_client_raw_call_api_can_server_side_apply(kube_emulator: KubeEmulator) -> None:
    config = kubernetes.client.Configuration(
        host=kube_emulator.url,
        api_key={"BearerToken": kube_emulator.token},
        api_key_prefix={"BearerToken": "Bearer"},
    )
    with kubernetes.client.ApiClient(config) as api:
        # kubernetes >= 31 (openapi-generator 7): param_serialize -> call_api -> read the RESTResponse.
        method, url, headers, body, _post = api.param_serialize(
            "PATCH",
            DEPLOY_PATH,
            query_params=[("fieldManager", "hoop"), ("dryRun", "All")],
            header_params={"Content-Type": APPLY_CONTENT_TYPE, "Accept": "application/json"},
            body=deployment(7),
            auth_settings=["BearerToken"],
        )
        response = api.call_api(method, url, header_params=headers, body=body)
        response.read()
        status, data = response.status, json.loads(response.data)

    assert status == 201
    assert data["spec"]["replicas"] == 7
    assert kube_emulator.objects() == []


# ------------------------------------------------------------------------------- real kube-apiserver (opt-in)


@pytest.mark.real_k8s
def test_real_server_applies_a_configmap_and_dry_run_stores_nothing(
    real_kube: RealKube, fresh_namespace: str
) -> None:
    path = f"/api/v1/namespaces/{fresh_namespace}/configmaps/cfg"
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}}
    headers = {"Content-Type": APPLY}
    with real_kube.admin_client() as admin:
        dry = admin.patch(path, params={"fieldManager": "hoop", "dryRun": "All"}, json=cm, headers=headers)
        after_dry = admin.get(path)
        real = admin.patch(path, params={"fieldManager": "hoop"}, json=cm, headers=headers)
        conflict = admin.patch(
            path, params={"fieldManager": "other"}, json=cm | {"data": {"a": "2"}}, headers=headers
        )

    assert dry.status_code == 201, dry.text
    assert dry.json()["data"] == {"a": "1"}
    assert after_dry.status_code == 404
    assert real.status_code == 201, real.text
    assert real.json()["metadata"]["managedFields"][0]["manager"] == "hoop"
    assert conflict.status_code == 409
    assert conflict.json()["details"]["causes"][0]["field"] == ".data.a"


@pytest.mark.real_k8s
def test_real_server_forbids_the_agent_until_granted(real_kube: RealKube, fresh_namespace: str) -> None:
    path = f"/api/v1/namespaces/{fresh_namespace}/configmaps"
    with real_kube.agent_client() as agent:
        denied = agent.get(path)
        real_kube.grant_agent(fresh_namespace, verbs=["get", "list"], resources=["configmaps"])
        allowed = agent.get(path)

    assert (denied.status_code, denied.json()["reason"]) == (403, "Forbidden")
    assert allowed.status_code == 200, allowed.text
