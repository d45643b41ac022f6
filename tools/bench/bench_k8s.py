"""Kubernetes benchmarks: offline policy-check throughput, and kubectl_apply's added latency.

Run from the repository root: ``python tools/bench/bench_k8s.py [--iterations 50] [--repeat 200] [--bundle 20]``

* **Policy-check throughput**: a ``--bundle``-document manifest (a realistic mix: Deployments with a
  restricted-compliant securityContext, Services, ConfigMaps, a Secret, an Ingress, a CronJob, ...)
  through the whole offline pipeline the backend runs before any request: ``parse_manifest``,
  ``validate_objects`` (schemas of Kubernetes 1.30), ``check_objects`` and ``mask_object`` on every
  body. Median per stage over ``--repeat`` runs, reported as bundles/s and manifests/s, next to plain
  ``yaml.load_all`` (CSafeLoader when available) of the same text: "just reading the YAML".
* **Apply latency**: the emulator (``tests.support.kube``) over real HTTP on loopback, a 3-object
  bundle (Deployment, Service, ConfigMap) whose annotation, replicas and ConfigMap value change at
  every iteration. One run compares against the direct path: the official ``kubernetes`` client doing
  per object exactly the requests hoop-mcp sends on an allowed apply (GET the live object,
  server-side apply with ``dryRun=All``, then the real server-side apply with the live
  resourceVersion as precondition), against ``kubectl_apply`` through an in-memory MCP client on a
  real hoop server (allow-all policy, audit records in SQLite). The two paths alternate per
  iteration; printed with median, p95, the ratio and where hoop's extra time goes.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
import kubernetes  # noqa: E402
import yaml  # noqa: E402
from mcp import Client  # noqa: E402
from tests.support.hoop import hoop_server  # noqa: E402
from tests.support.kube import APPLY_CONTENT_TYPE, KubeEmulator, running_kube_emulator  # noqa: E402
from tests.support.kubesetup import write_kube_config  # noqa: E402
from timing import instrument, median_ms  # noqa: E402

from hoop_mcp.backends.k8s_checks import check_objects  # noqa: E402
from hoop_mcp.backends.k8s_manifest import parse_manifest  # noqa: E402
from hoop_mcp.backends.k8s_mask import mask_object  # noqa: E402
from hoop_mcp.backends.k8s_validate import validate_objects  # noqa: E402

YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

POLICY = "version: 1\nrules:\n  - {id: allow-all, description: bench, verdict: allow}\n"
NAMESPACE = "staging"
DIRECT_NAMESPACE = "direct"  # the raw client's objects: no field-manager conflict with hoop's
FIELD_MANAGER = "hoop-mcp"
REQUESTS = 9  # per apply of the 3-object bundle: GET, dry-run apply, apply for each

# -- the bundle --------------------------------------------------------------------------------------


def _deployment(name: str, replicas: int = 2, stamp: str = "0", namespace: str = NAMESPACE) -> dict[str, Any]:
    labels = {"app": name, "tier": "web"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {"bench/iteration": stamp},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": name,
                            "image": f"registry.example.com/{name}:1.4.2",
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                            "env": [
                                {"name": "LOG_LEVEL", "value": "info"},
                                {
                                    "name": "DB_PASSWORD",
                                    "valueFrom": {
                                        "secretKeyRef": {"name": "db-credentials", "key": "password"}
                                    },
                                },
                            ],
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"cpu": "500m", "memory": "256Mi"},
                            },
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                                "readOnlyRootFilesystem": True,
                            },
                        }
                    ],
                },
            },
        },
    }


def _service(name: str, stamp: str = "0", namespace: str = NAMESPACE) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "annotations": {"bench/iteration": stamp}},
        "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    }


def _configmap(name: str, value: str = "fast", namespace: str = NAMESPACE) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {
            "mode": value,
            "feature.flags": "search,checkout",
            "app.properties": "retries=3\ntimeout=5s\n",
        },
    }


def _secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db-credentials", "namespace": NAMESPACE},
        "type": "Opaque",
        "stringData": {"username": "app", "password": "s3cr3t-Pa55w0rd-for-bench"},
    }


def _ingress() -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "web", "namespace": NAMESPACE},
        "spec": {
            "ingressClassName": "nginx",
            "rules": [
                {
                    "host": "shop.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "web-0", "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ],
        },
    }


def _cronjob() -> dict[str, Any]:
    pod = copy.deepcopy(_deployment("report")["spec"]["template"]["spec"])
    pod["restartPolicy"] = "OnFailure"
    pod["containers"][0].pop("readinessProbe")
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly-report", "namespace": NAMESPACE},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": pod}}}},
    }


def bundle_objects(count: int) -> list[dict[str, Any]]:
    """``count`` documents: one Secret, Ingress and CronJob, the rest Deployment/Service/ConfigMap."""
    extras = [_secret(), _ingress(), _cronjob()]
    objs: list[dict[str, Any]] = []
    i = 0
    while len(objs) < max(count - len(extras), 0):
        maker = (_deployment, _service, _configmap)[i % 3]
        objs.append(maker(f"web-{i // 3}"))
        i += 1
    return (objs + extras)[:count]


def to_yaml(objects: list[dict[str, Any]]) -> str:
    return "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objects)


# -- throughput ----------------------------------------------------------------------------------


def _p95_ms(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000


def bench_throughput(documents: int, repeat: int) -> None:
    text = to_yaml(bundle_objects(documents))
    started = time.perf_counter()
    validate_objects(parse_manifest(text), kubernetes_version="1.30")  # loads and compiles the schemas
    cold = time.perf_counter() - started
    stages: dict[str, list[float]] = {
        "parse_manifest": [],
        "validate_objects": [],
        "check_objects": [],
        "mask_object": [],
    }
    totals: list[float] = []
    baseline: list[float] = []
    findings = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        objects = parse_manifest(text)
        t1 = time.perf_counter()
        validate_objects(objects, kubernetes_version="1.30")
        t2 = time.perf_counter()
        findings = len(check_objects(objects))
        t3 = time.perf_counter()
        for obj in objects:
            mask_object(obj.body)
        t4 = time.perf_counter()
        for name, took in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            stages[name].append(took)
        totals.append(t4 - t0)
        t0 = time.perf_counter()
        docs = list(yaml.load_all(text, Loader=YamlLoader))
        baseline.append(time.perf_counter() - t0)
        assert len(docs) == len(objects) == documents
    total = statistics.median(totals)
    base = statistics.median(baseline)
    stage_sum = sum(statistics.median(s) for s in stages.values())
    print(
        f"policy checks: {documents}-document bundle ({len(text.encode()) / 1000:.1f} kB), {repeat} repeats,"
        f" median; {findings} finding(s) per bundle; first call (schema load) {cold * 1000:.0f} ms"
    )
    for name, samples in stages.items():
        m = statistics.median(samples)
        print(f"  {name:<34}{m * 1000:8.3f} ms  {100 * m / stage_sum:5.1f}%")
    print(
        f"  whole pipeline:                   {total * 1000:8.3f} ms  = {1 / total:8.1f} bundles/s,"
        f" {documents / total:9.0f} manifests/s"
    )
    loader = YamlLoader.__name__
    print(
        f"  yaml.load_all ({loader}):     {base * 1000:8.3f} ms  = {1 / base:8.1f} bundles/s,"
        f" {documents / base:9.0f} manifests/s"
    )
    print(f"  ratio pipeline / yaml.load_all:   {total / base:5.2f}x")


# -- apply latency -------------------------------------------------------------------------------


def _apply_set(i: int, namespace: str) -> list[dict[str, Any]]:
    stamp = str(i)
    return [
        _deployment("web", replicas=2 + i % 2, stamp=stamp, namespace=namespace),
        _service("web", stamp=stamp, namespace=namespace),
        _configmap("settings", value=f"v{i}", namespace=namespace),
    ]


_PLURALS = {"Deployment": "deployments", "Service": "services", "ConfigMap": "configmaps"}


def _object_path(obj: dict[str, Any]) -> str:
    api = obj["apiVersion"]
    base = f"/api/{api}" if "/" not in api else f"/apis/{api}"
    meta = obj["metadata"]
    return f"{base}/namespaces/{meta['namespace']}/{_PLURALS[obj['kind']]}/{meta['name']}"


class DirectClient:
    """The official client's raw call (kubernetes >= 31: param_serialize -> call_api -> read)."""

    def __init__(self, kube: KubeEmulator) -> None:
        config = kubernetes.client.Configuration(
            host=kube.url,
            api_key={"BearerToken": kube.token},
            api_key_prefix={"BearerToken": "Bearer"},
        )
        self.api = kubernetes.client.ApiClient(config)

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: dict[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = APPLY_CONTENT_TYPE
        m, url, hdrs, data, _post = self.api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(m, url, header_params=hdrs, body=data)
        response.read()  # type: ignore[no-untyped-call]
        return response.status, json.loads(response.data or b"{}")

    def apply(self, objects: list[dict[str, Any]]) -> None:
        """Per object, the requests kubectl_apply sends on an allowed apply."""
        for obj in objects:
            path = _object_path(obj)
            status, live = self._call("GET", path)
            if status not in (200, 404):
                raise SystemExit(f"GET {path}: {status} {live}")
            query = [("fieldManager", FIELD_MANAGER)]
            status, answer = self._call("PATCH", path, query=[*query, ("dryRun", "All")], body=obj)
            if status not in (200, 201):
                raise SystemExit(f"dry-run apply {path}: {status} {answer}")
            body = obj
            if status == 200 and live.get("metadata", {}).get("resourceVersion"):
                body = {
                    **obj,
                    "metadata": {**obj["metadata"], "resourceVersion": live["metadata"]["resourceVersion"]},
                }
            status, answer = self._call("PATCH", path, query=query, body=body)
            if status not in (200, 201):
                raise SystemExit(f"apply {path}: {status} {answer}")


def _instrument() -> dict[str, list[float]]:
    """Time hoop's stages (seams we own) to show where the added latency goes."""
    from hoop_mcp.backends import k8s_api
    from hoop_mcp.backends import kubernetes as k8s_backend
    from hoop_mcp.core import pipeline

    return instrument(
        [
            (pipeline.Pipeline, "prepare", "prepare"),
            (pipeline.Pipeline, "_record", "record"),
            (k8s_backend.KubernetesBackend, "execute", "execute"),
            (k8s_api.KubeApi, "_send", "send"),
        ]
    )


async def _bench_apply(kube: KubeEmulator, iterations: int, timings: dict[str, list[float]]) -> None:
    direct = DirectClient(kube)
    direct_s: list[float] = []
    hoop_s: list[float] = []
    warmup = 3
    with tempfile.TemporaryDirectory(prefix="hoop-bench-k8s-") as tmp:
        setup = write_kube_config(Path(tmp) / "hoop", server=kube.url, token=kube.token, policy=POLICY)
        try:
            async with hoop_server(setup) as (hoop, _runtime), Client(hoop.mcp) as client:
                for i in range(warmup + iterations):
                    # The manifest text is built outside the timing, as an agent would send it.
                    objects = _apply_set(i, NAMESPACE)
                    text = to_yaml(objects)
                    t0 = time.perf_counter()
                    result = await client.call_tool("kubectl_apply", {"manifest": text})
                    took = time.perf_counter() - t0
                    if result.is_error:
                        raise SystemExit(f"kubectl_apply failed: {result.content}")
                    if i >= warmup:
                        hoop_s.append(took)
                    elif i == warmup - 1:  # warm-up done: discovery, first connections, schema load
                        timings.clear()
                    plain = _apply_set(i, DIRECT_NAMESPACE)
                    t0 = time.perf_counter()
                    direct.apply(plain)
                    if i >= warmup:
                        direct_s.append(time.perf_counter() - t0)
        finally:
            direct.close()
    cm = kube.get("v1", "ConfigMap", NAMESPACE, "settings")
    assert cm is not None, "kubectl_apply stored nothing"
    assert cm["data"]["mode"] == f"v{warmup + iterations - 1}", "the last kubectl_apply did not land"

    d, h = median_ms(direct_s), median_ms(hoop_s)
    print(
        f"apply latency: 3 objects (Deployment, Service, ConfigMap), {iterations} iterations per path"
        " (alternating), emulator over HTTP on loopback"
    )
    print(f"  raw client (GET + dry-run + apply, x3):   median {d:7.2f} ms   p95 {_p95_ms(direct_s):7.2f} ms")
    print(f"  kubectl_apply (MCP, pipeline):            median {h:7.2f} ms   p95 {_p95_ms(hoop_s):7.2f} ms")
    print(f"  ratio kubectl_apply / raw client:         {h / d:5.2f}x  (+{h - d:.2f} ms)")
    per = {k: median_ms(v) for k, v in timings.items()}
    records = len(timings.get("record", [])) / max(iterations, 1)
    sends = len(timings.get("send", [])) / max(iterations, 1)
    inside = per.get("prepare", 0) + per.get("record", 0) * records + per.get("execute", 0)
    print("  where kubectl_apply's time goes (medians per call):")
    print(f"    prepare (parse, validate, checks, policy, render)  {per.get('prepare', 0):7.2f} ms")
    print(
        f"    durable audit appends ({records:.0f} per call)             {per.get('record', 0) * records:7.2f} ms"
    )
    print(
        f"    backend execute ({sends:.0f} HTTP requests via httpx)     {per.get('execute', 0):7.2f} ms"
        f"  (one request {per.get('send', 0):.2f} ms; raw client: {d / REQUESTS:.2f} ms per request)"
    )
    print(f"    rest (MCP layer, result building, masking)         {h - inside:7.2f} ms")


def bench_apply(iterations: int) -> None:
    # As the CLI does: no INFO line per HTTP request (httpx) nor per emulator access (aiohttp).
    for noisy in ("mcp", "httpx", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    timings = _instrument()
    with running_kube_emulator() as kube:
        anyio.run(_bench_apply, kube, iterations, timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50, help="kubectl_apply calls per path")
    parser.add_argument("--repeat", type=int, default=200, help="runs of the offline pipeline per bundle")
    parser.add_argument("--bundle", type=int, default=20, help="documents in the throughput bundle")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpu(s), Python {platform.python_version()},"
        f" PyYAML {yaml.__version__}, kubernetes client {kubernetes.__version__}"
    )
    bench_throughput(args.bundle, args.repeat)
    bench_apply(args.iterations)


if __name__ == "__main__":
    main()
