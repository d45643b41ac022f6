"""Offline strict schema validation of parsed objects (kubernetes-validate's upstream schemas)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hoop_mcp.backends import k8s_validate
from hoop_mcp.backends.k8s_manifest import parse_manifest
from hoop_mcp.backends.k8s_objects import KubeObject
from hoop_mcp.backends.k8s_validate import available_versions, is_namespaced, validate_objects
from hoop_mcp.core.errors import ConfigError, InvalidInput

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
  annotations: {team: storefront}
spec:
  replicas: 3
  revisionHistoryLimit: 5
  selector:
    matchLabels: {app: web}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 25%, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: web}
    spec:
      serviceAccountName: web
      securityContext: {runAsNonRoot: true, runAsUser: 1000}
      containers:
      - name: web
        image: registry.example.com/web:1.4.2
        imagePullPolicy: IfNotPresent
        args: ["--port=8080"]
        ports:
        - {containerPort: 8080, name: http, protocol: TCP}
        env:
        - {name: LOG_LEVEL, value: info}
        - name: DB_PASSWORD
          valueFrom: {secretKeyRef: {name: db, key: password}}
        resources:
          requests: {cpu: 100m, memory: 128Mi}
          limits: {cpu: 1, memory: 512Mi}
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          initialDelaySeconds: 5
        volumeMounts:
        - {name: config, mountPath: /etc/web, readOnly: true}
      volumes:
      - name: config
        configMap: {name: web-config}
"""

HONEST = {
    "deployment": DEPLOYMENT,
    "service": """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: ClusterIP
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http, protocol: TCP}
  - {name: metrics, port: 9090, targetPort: 9090}
""",
    "configmap": """\
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config, namespace: shop}
data:
  app.properties: |
    color=blue
  timeout: "30"
binaryData:
  logo.png: iVBORw0KGgo=
""",
    "secret": """\
apiVersion: v1
kind: Secret
metadata: {name: db, namespace: shop}
type: Opaque
data:
  password: aHVudGVyMg==
  multi-line: "aHVu\\ndGVyMg=="
stringData:
  username: app
""",
    "ingress": """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  annotations: {nginx.ingress.kubernetes.io/rewrite-target: /}
spec:
  ingressClassName: nginx
  tls:
  - hosts: [shop.example.com]
    secretName: shop-tls
  rules:
  - host: shop.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: web, port: {number: 80}}
""",
    "cronjob": """\
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly-report}
spec:
  schedule: "0 3 * * *"
  concurrencyPolicy: Forbid
  successfulJobsHistoryLimit: 3
  jobTemplate:
    spec:
      backoffLimit: 2
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - name: report
            image: busybox:1.36
            command: [sh, -c, "echo hi"]
""",
    "rbac": """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: shop}
rules:
- apiGroups: [""]
  resources: [pods, pods/log]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: read-pods, namespace: shop}
subjects:
- {kind: ServiceAccount, name: web, namespace: shop}
roleRef: {kind: Role, name: pod-reader, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:aggregate-to-view:widgets"}
rules:
- {apiGroups: [example.com], resources: [widgets], verbs: [get]}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: shop}
automountServiceAccountToken: false
""",
    "workloads": """\
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: postgres:16}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 10Gi}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: "app:1", command: [migrate]}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 2
  maxReplicas: 10
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  minAvailable: 50%
  selector: {matchLabels: {app: web}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: storefront}}
""",
    "crd": """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-preserve-unknown-fields: true
            properties:
              size: {type: integer, minimum: 1}
""",
    "kubectl create output": """\
apiVersion: v1
kind: ConfigMap
metadata:
  creationTimestamp: null
  name: generated
""",
}


def objects_of(text: str) -> list[KubeObject]:
    return parse_manifest(text)


def refusal(text: str, **options: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        validate_objects(objects_of(text), **options)
    return caught.value


@pytest.mark.parametrize("name", sorted(HONEST))
@pytest.mark.parametrize("version", ["1.25", "1.30", "1.37"])
def test_an_honest_manifest_passes_validation(name: str, version: str) -> None:
    validate_objects(objects_of(HONEST[name]), kubernetes_version=version)


def with_change(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        (with_change(DEPLOYMENT, "  replicas: 3", "  replcas: 3"), "spec.replcas", "unknown field"),
        (
            with_change(DEPLOYMENT, "imagePullPolicy: IfNotPresent", "imagePullPolice: IfNotPresent"),
            "spec.template.spec.containers[0].imagePullPolice",
            "unknown field",
        ),
        (
            with_change(DEPLOYMENT, "  replicas: 3", "  replicas: '3'"),
            "spec.replicas",
            "expected integer, got string",
        ),
        (
            with_change(DEPLOYMENT, "  replicas: 3", "  replicas: 3.5"),
            "spec.replicas",
            "expected integer, got number",
        ),
        (
            with_change(DEPLOYMENT, "  replicas: 3", "  replicas: true"),
            "spec.replicas",
            "expected integer, got boolean",
        ),
        (
            with_change(DEPLOYMENT, "  replicas: 3", "  replicas: 4294967296"),
            "spec.replicas",
            "number is out of range for int32",
        ),
        (
            with_change(
                DEPLOYMENT, "        - {containerPort: 8080, name: http, protocol: TCP}", "          80"
            ),
            "spec.template.spec.containers[0].ports",
            "expected array, got integer",
        ),
        (
            with_change(DEPLOYMENT, "maxUnavailable: 0}", "maxUnavailable: [0]}"),
            "spec.strategy.rollingUpdate.maxUnavailable",
            "expected string or integer, got array",
        ),
        (
            with_change(DEPLOYMENT, "memory: 512Mi}", "memory: {value: 1}}"),
            "spec.template.spec.containers[0].resources.limits.memory",
            "expected string or number, got object",
        ),
        (
            with_change(DEPLOYMENT, "  selector:\n    matchLabels: {app: web}\n", ""),
            "spec.selector",
            "required field is missing",
        ),
        (
            with_change(
                DEPLOYMENT, "  labels: {app: web}\n  annotations", "  labels: {app: 1}\n  annotations"
            ),
            "metadata.labels.app",
            "expected string, got integer",
        ),
        (
            with_change(DEPLOYMENT, "  annotations: {team: storefront}", "  annotations: {a.b/c: 1}"),
            'metadata.annotations["a.b/c"]',
            "expected string, got integer",
        ),
        (
            with_change(HONEST["configmap"], "logo.png: iVBORw0KGgo=", "logo.png: not base64!"),
            'binaryData["logo.png"]',
            "value is not valid base64",
        ),
        (
            with_change(
                HONEST["kubectl create output"], "creationTimestamp: null", "creationTimestamp: yesterday"
            ),
            "metadata.creationTimestamp",
            "expected an RFC 3339 date-time",
        ),
        (
            with_change(HONEST["service"], "  type: ClusterIP\n", "  type: ClusterIP\n  tipe: x\n"),
            "spec.tipe",
            "unknown field",
        ),
    ],
)
def test_a_schema_violation_is_refused_naming_the_object_and_field(
    text: str, path: str, message: str
) -> None:
    error = refusal(text)
    assert error.details["rule_id"] == "k8s.schema_invalid"
    assert f": {path}: {message}" in error.message
    assert "document 1 " in error.message


def test_a_schema_error_names_the_source_kind_and_name() -> None:
    text = HONEST["configmap"] + "---\n" + with_change(DEPLOYMENT, "  replicas: 3", "  replcas: 3")
    assert "document 2 Deployment/web: spec.replcas: unknown field" in refusal(text).message


def test_at_most_five_schema_errors_are_listed_with_the_total() -> None:
    text = HONEST["configmap"].replace("data:\n", "data:\n" + "".join(f"  k{i}: 1\n" for i in range(8)))
    message = refusal(text).message
    assert message.startswith("8 schema errors")
    assert "(and 3 more)" in message
    assert message.count("expected string, got integer") == 5


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "apiVersion: apps/v1\nkind: Deploymnet\nmetadata: {name: web}\n",
            "kind Deploymnet with apiVersion apps/v1",
        ),
        (
            "apiVersion: apps/v2\nkind: Deployment\nmetadata: {name: web}\n",
            "exists as apiVersion apps/v1, not apps/v2",
        ),
        ("apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: web}\n", "networking.k8s.io/v1"),
        (
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
            "kind Widget with apiVersion example.com/v1",
        ),
        ("apiVersion: v1\nkind: Deployment\nmetadata: {name: web}\n", "not v1"),
    ],
)
def test_an_unknown_kind_or_api_version_is_refused(text: str, needle: str) -> None:
    error = refusal(text)
    assert error.details["rule_id"] == "k8s.unknown_kind"
    assert needle in error.message
    assert "document 1" in error.message
    assert error.hint is not None
    assert "custom resources" in error.hint


@pytest.mark.parametrize(
    "text",
    [
        "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nmetadata: {name: x}\nspec: {user: a}\n",
        "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nmetadata: {name: x}\nspec: {token: t}\n",
        "apiVersion: v1\nkind: Status\nmetadata: {name: x}\n",
        "apiVersion: v1\nkind: Binding\nmetadata: {name: x}\ntarget: {name: n}\n",
        "apiVersion: policy/v1\nkind: Eviction\nmetadata: {name: x}\n",
    ],
)
def test_a_kind_that_cannot_be_applied_is_refused(text: str) -> None:
    assert refusal(text).details["rule_id"] == "k8s.not_appliable"


def test_a_list_object_handed_in_directly_is_refused_as_not_appliable() -> None:
    obj = KubeObject(
        api_version="v1",
        kind="ConfigMapList",
        name="x",
        namespace=None,
        body={"apiVersion": "v1", "kind": "ConfigMapList", "items": []},
        index=0,
        source="document 1",
    )
    with pytest.raises(InvalidInput) as caught:
        validate_objects([obj])
    assert caught.value.details["rule_id"] == "k8s.not_appliable"


SECRET_VALUE = "hunter2-TOPSECRET-value"


@pytest.mark.parametrize(
    "text",
    [
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ndata: {{password: '{SECRET_VALUE}'}}\n",
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringData: {{password: ['{SECRET_VALUE}']}}\n",
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ntype: {{x: '{SECRET_VALUE}'}}\n",
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nimmutable: '{SECRET_VALUE}'\n",
        with_change(
            DEPLOYMENT,
            "{name: LOG_LEVEL, value: info}",
            f"{{name: LOG_LEVEL, value: {{v: '{SECRET_VALUE}'}}}}",
        ),
        with_change(DEPLOYMENT, "  replicas: 3", f"  replicas: '{SECRET_VALUE}'"),
        with_change(HONEST["service"], "type: ClusterIP", f"type: [{SECRET_VALUE}]"),
    ],
)
def test_a_rejected_value_never_appears_in_the_error(text: str) -> None:
    error = refusal(text)
    assert error.details["rule_id"] == "k8s.schema_invalid"
    assert "TOPSECRET" not in error.public_message
    assert "TOPSECRET" not in error.diagnostics()


def test_the_secret_base64_error_does_not_echo_the_value() -> None:
    text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {password: 'c2VjcmV0 TOPSECRET'}\n"
    error = refusal(text)
    assert "data.password: value is not valid base64" in error.message
    assert "TOPSECRET" not in error.public_message


@pytest.mark.parametrize("version", ["v1.30", "1.30.4", " 1.30 ", "1.30"])
def test_a_kubernetes_version_may_be_written_with_v_prefix_or_patch(version: str) -> None:
    validate_objects(objects_of(HONEST["service"]), kubernetes_version=version)


@pytest.mark.parametrize("version", ["1.12", "2.0", "1.99", "latest", "", "1"])
def test_a_kubernetes_version_without_schemas_is_a_config_error_listing_the_available_ones(
    version: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_objects(objects_of(HONEST["service"]), kubernetes_version=version)
    assert "1.30" in (caught.value.hint or "")
    assert caught.value.details["available_versions"] == available_versions()


def test_available_versions_are_sorted_major_minor_strings() -> None:
    versions = available_versions()
    assert "1.30" in versions
    assert versions == sorted(versions, key=lambda v: tuple(int(p) for p in v.split(".")))
    assert all(v.count(".") == 1 for v in versions)


def test_the_schemas_of_a_version_are_loaded_once_and_reused() -> None:
    objects = objects_of(DEPLOYMENT)
    validate_objects(objects)
    schemas = k8s_validate._schemas("1.30")
    check = schemas.check_for("apps/v1", "Deployment")
    validate_objects(objects)
    assert k8s_validate._schemas("1.30") is schemas
    assert schemas.check_for("apps/v1", "Deployment") is check


def test_validation_does_not_change_the_objects() -> None:
    objects = objects_of(DEPLOYMENT + "---\n" + HONEST["secret"])
    before = copy.deepcopy([o.body for o in objects])
    validate_objects(objects)
    assert [o.body for o in objects] == before


@pytest.mark.parametrize(
    ("api_version", "kind", "expected"),
    [
        ("v1", "ConfigMap", True),
        ("v1", "Secret", True),
        ("apps/v1", "Deployment", True),
        ("rbac.authorization.k8s.io/v1", "RoleBinding", True),
        ("v1", "Namespace", False),
        ("v1", "Node", False),
        ("v1", "PersistentVolume", False),
        ("rbac.authorization.k8s.io/v1", "ClusterRole", False),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", False),
        ("storage.k8s.io/v1", "StorageClass", False),
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", False),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition", False),
        ("networking.k8s.io/v1", "IngressClass", False),
        ("networking.k8s.io/v1", "Ingress", True),
        ("example.com/v1", "Widget", None),
        ("example.com/v1", "ClusterRole", None),
        ("v1", "Deploymnet", None),
    ],
)
def test_is_namespaced_knows_the_scope_of_built_in_kinds(
    api_version: str, kind: str, expected: bool | None
) -> None:
    assert is_namespaced(api_version, kind) is expected


def _appliable_schema_kinds(version: str) -> list[tuple[str, str]]:
    return [
        (api_version, kind)
        for api_version, kind in k8s_validate.schema_kinds(version)
        if kind not in k8s_validate._NOT_APPLIABLE and not kind.endswith("List")
    ]


@pytest.mark.parametrize("version", available_versions())
def test_every_kind_in_the_schemas_has_a_known_scope(version: str) -> None:
    kinds = _appliable_schema_kinds(version)
    assert ("apps/v1", "Deployment") in kinds
    unknown = [(av, kind) for av, kind in kinds if is_namespaced(av, kind) is None]
    assert unknown == []


@pytest.mark.parametrize("version", available_versions())
def test_every_kind_in_the_schemas_compiles_and_rejects_an_unknown_top_level_field(version: str) -> None:
    schemas = k8s_validate._schemas(version)
    for api_version, kind in k8s_validate.schema_kinds(version):
        check = schemas.check_for(api_version, kind)
        assert check is not None
        errors: list[Any] = []
        check({"apiVersion": api_version, "kind": kind, "notAField": 1}, None, errors)
        assert ((None, "notAField"), "unknown field") in errors


def test_the_default_kubernetes_version_has_schemas() -> None:
    assert "1.30" in available_versions()
    validate_objects(objects_of(HONEST["configmap"]))


# Differential check against kubernetes-validate itself (jsonschema on the same strict schemas).
DIFFERENTIAL = [
    *HONEST.values(),
    with_change(DEPLOYMENT, "  replicas: 3", "  replcas: 3"),
    with_change(DEPLOYMENT, "  replicas: 3", "  replicas: '3'"),
    with_change(DEPLOYMENT, "        - {containerPort: 8080, name: http, protocol: TCP}", "          80"),
    with_change(DEPLOYMENT, "imagePullPolicy: IfNotPresent", "imagePullPolice: IfNotPresent"),
    with_change(DEPLOYMENT, "maxUnavailable: 0}", "maxUnavailable: [0]}"),
    with_change(DEPLOYMENT, "  selector:\n    matchLabels: {app: web}\n", ""),
    with_change(HONEST["service"], "port: 80,", "port: [80],"),
    with_change(HONEST["rbac"], "verbs: [get, list, watch]", "verbs: get"),
    with_change(HONEST["crd"], "served: true", "served: yes-please"),
]


@pytest.mark.parametrize("text", DIFFERENTIAL)
def test_the_offline_validator_agrees_with_kubernetes_validate(text: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    objects = objects_of(text)
    theirs_ok = True
    for obj in objects:
        try:
            kubernetes_validate.validate(copy.deepcopy(obj.body), "1.30", strict=True)
        except kubernetes_validate.ValidationError:
            theirs_ok = False
    try:
        validate_objects(objects, kubernetes_version="1.30")
        ours_ok = True
    except InvalidInput:
        ours_ok = False
    assert ours_ok == theirs_ok
