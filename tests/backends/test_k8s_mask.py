"""Masking of Kubernetes objects: Secret values, last-applied annotations, secret-looking env vars."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hoop_mcp.backends.k8s_mask import (
    LAST_APPLIED,
    REDACTED,
    looks_secret,
    mask_object,
    secret_strings,
)
from tests.support.secret_factory import GENERATORS


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"}, **fields}


def deployment(*env: dict[str, Any], container_list: str = "containers") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"template": {"spec": {container_list: [{"name": "app", "image": "x", "env": list(env)}]}}},
    }


def env_of(body: dict[str, Any], container_list: str = "containers") -> list[Any]:
    env: list[Any] = body["spec"]["template"]["spec"][container_list][0]["env"]
    return env


# --------------------------------------------------------------------------------------------
# Secrets.


def test_secret_values_are_redacted_and_keys_kept() -> None:
    body = secret(
        data={"password": b64("hunter2hunter2"), "tls.crt": b64("cert")}, stringData={"user": "admin"}
    )
    masked = mask_object(body)
    assert masked["data"] == {"password": REDACTED, "tls.crt": REDACTED}
    assert masked["stringData"] == {"user": REDACTED}
    assert masked["metadata"] == body["metadata"]


def test_masking_never_changes_its_input() -> None:
    body = secret(data={"a": b64("value-one")}, metadata={"annotations": {LAST_APPLIED: "{}"}})
    before = copy.deepcopy(body)
    mask_object(body)
    assert body == before


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "secret", "data": {"k": "djE="}},
        {"kind": "SECRET", "data": {"k": "djE="}},
        {"apiVersion": "example.com/v1", "kind": "Secret", "data": {"k": "djE="}},
        {"data": {"k": "djE="}},
        {"kind": ["Secret"], "data": {"k": "djE="}},
    ],
    ids=["lowercase", "uppercase", "other-group", "no-kind", "kind-not-a-string"],
)
def test_secret_values_are_redacted_whatever_the_kind_spelling_or_when_kind_is_unknown(
    body: dict[str, Any],
) -> None:
    assert mask_object(body)["data"] == {"k": REDACTED}


@pytest.mark.parametrize("data", ["djE=", ["djE="], 42, True], ids=["string", "list", "int", "bool"])
@pytest.mark.parametrize("field", ["data", "stringData"])
def test_secret_data_of_the_wrong_type_is_replaced_whole(field: str, data: Any) -> None:
    assert mask_object(secret(**{field: data}))[field] == REDACTED


@pytest.mark.parametrize("value", [{"nested": "x"}, ["x"], 7, None])
def test_secret_values_of_any_type_are_redacted(value: Any) -> None:
    assert mask_object(secret(data={"k": value}))["data"] == {"k": REDACTED}


def test_configmap_data_is_not_masked() -> None:
    body = {"kind": "ConfigMap", "data": {"password": "not-really"}}
    assert mask_object(body) == body


# --------------------------------------------------------------------------------------------
# Last-applied annotation.


@pytest.mark.parametrize("kind", ["ConfigMap", "Deployment", "Secret", "Service"])
def test_the_last_applied_annotation_is_redacted_on_any_object(kind: str) -> None:
    last = json.dumps(secret(data={"password": b64("hunter2hunter2")}))
    body = {"kind": kind, "metadata": {"name": "x", "annotations": {LAST_APPLIED: last, "team": "a"}}}
    masked = mask_object(body)
    assert masked["metadata"]["annotations"] == {LAST_APPLIED: REDACTED, "team": "a"}


def test_annotations_of_the_wrong_type_are_replaced_whole() -> None:
    masked = mask_object({"kind": "ConfigMap", "metadata": {"annotations": [LAST_APPLIED, "{...}"]}})
    assert masked["metadata"]["annotations"] == REDACTED


def test_managed_fields_are_left_alone() -> None:
    managed = [{"manager": "kubectl", "fieldsV1": {"f:data": {"f:password": {}}}}]
    body = secret(metadata={"name": "s", "managedFields": managed}, data={"password": "eA=="})
    assert mask_object(body)["metadata"]["managedFields"] == managed


# --------------------------------------------------------------------------------------------
# Env vars.


@pytest.mark.parametrize(
    "name",
    [
        "DB_PASSWORD",
        "password",
        "MYSQL_PASSWD",
        "PGPASS",
        "SMTP_PWD",
        "CLIENT_SECRET",
        "GITHUB_TOKEN",
        "API_KEY",
        "apiKey",
        "AWS_SECRET_ACCESS_KEY",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "BASIC_AUTH",
        "PRIVATE_KEY_PEM",
        "TLS_CERT",
        "SENTRY_DSN",
        "REDIS_CONNECTION_STRING",
        "DATABASE_URL",
        "SESSION_SALT",
        "COOKIE_SIGNING",
        "KEYCLOAK_URL",  # accepted false positive: masking more is fail-closed
    ],
)
def test_env_values_with_secret_looking_names_are_redacted(name: str) -> None:
    masked = mask_object(
        deployment({"name": name, "value": "plain"}, {"name": "LOG_LEVEL", "value": "debug"})
    )
    assert env_of(masked) == [{"name": name, "value": REDACTED}, {"name": "LOG_LEVEL", "value": "debug"}]


@pytest.mark.parametrize(
    "generator",
    [
        "github_classic",
        "github_fine_grained",
        "slack_bot",
        "aws_id",
        "aws_secret",
        "jwt",
        "rsa_private_key",
        "high_entropy",
        "hex40",
        "stripe_live",
        "gitlab",
        "google",
        "npm",
    ],
)
def test_env_values_that_look_secret_are_redacted_whatever_the_name(generator: str) -> None:
    value = GENERATORS[generator]()
    assert looks_secret(value)
    masked = mask_object(deployment({"name": "SETTING", "value": value}))
    assert env_of(masked) == [{"name": "SETTING", "value": REDACTED}]


@pytest.mark.parametrize(
    "value",
    [
        "postgres://app:s3cr3t-pw@db.internal:5432/shop",
        "redis://:pw1234@cache:6379/0",
        "amqp://guest:guest@rabbit/",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
    ],
    ids=["postgres", "redis-no-user", "amqp", "pem"],
)
def test_env_values_with_credentials_in_a_url_or_a_pem_block_are_redacted(value: str) -> None:
    assert env_of(mask_object(deployment({"name": "TARGET", "value": value}))) == [
        {"name": "TARGET", "value": REDACTED}
    ]


@pytest.mark.parametrize(
    "value",
    [
        "debug",
        "8080",
        "true",
        "https://api.example.com/v1/things",
        "postgres://db.internal:5432/shop",
        "registry.example.com/team/app:1.2.3",
        "my-service-production-eu-west-1",
        "0b3f7a52-4c1e-4f7b-9a8e-2d6c5b1a9e70",
        "Europe/Amsterdam",
        "",
    ],
)
def test_harmless_env_values_with_harmless_names_stay_visible(value: str) -> None:
    assert not looks_secret(value)
    body = deployment({"name": "SETTING", "value": value})
    assert mask_object(body) == body


@pytest.mark.parametrize(
    "entry",
    [
        {"value": "debug"},
        {"name": None, "value": "debug"},
        {"name": "LEVEL", "value": 5},
        {"name": "LEVEL", "value": ["a"]},
    ],
    ids=["no-name", "name-null", "value-int", "value-list"],
)
def test_env_entries_of_odd_shapes_are_redacted(entry: dict[str, Any]) -> None:
    assert env_of(mask_object(deployment(entry)))[0]["value"] == REDACTED


def test_value_from_references_are_kept() -> None:
    ref = {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
    body = deployment(ref)
    assert mask_object(body) == body


@pytest.mark.parametrize("container_list", ["initContainers", "containers", "ephemeralContainers"])
def test_env_in_every_container_list_is_masked(container_list: str) -> None:
    body = deployment({"name": "TOKEN", "value": "abc"}, container_list=container_list)
    assert env_of(mask_object(body), container_list) == [{"name": "TOKEN", "value": REDACTED}]


@pytest.mark.parametrize("env", ["TOKEN=abc", {"TOKEN": "abc"}])
def test_a_container_env_that_is_not_a_list_is_replaced_whole(env: Any) -> None:
    body = deployment()
    body["spec"]["template"]["spec"]["containers"][0]["env"] = env
    assert mask_object(body)["spec"]["template"]["spec"]["containers"][0]["env"] == REDACTED


def test_env_lists_anywhere_in_a_custom_resource_are_masked() -> None:
    body = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "spec": {"templates": [{"container": {"env": [{"name": "API_TOKEN", "value": "t0k3n"}]}}]},
    }
    masked = mask_object(body)
    assert masked["spec"]["templates"][0]["container"]["env"] == [{"name": "API_TOKEN", "value": REDACTED}]


# --------------------------------------------------------------------------------------------
# Lists.


def test_list_items_are_masked_one_by_one() -> None:
    body = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            secret(data={"a": "eA=="}),
            {"kind": "ConfigMap", "data": {"a": "visible"}},
            deployment({"name": "PASSWORD", "value": "pw"}),
        ],
    }
    masked = mask_object(body)
    assert masked["items"][0]["data"] == {"a": REDACTED}
    assert masked["items"][1]["data"] == {"a": "visible"}
    assert env_of(masked["items"][2]) == [{"name": "PASSWORD", "value": REDACTED}]


def test_items_of_a_secret_list_without_a_kind_are_secrets() -> None:
    body = {"kind": "SecretList", "items": [{"data": {"a": "eA=="}}]}
    assert mask_object(body)["items"][0]["data"] == {"a": REDACTED}


def test_items_of_a_configmap_list_without_a_kind_are_not_masked() -> None:
    body = {"kind": "ConfigMapList", "items": [{"data": {"a": "visible"}}]}
    assert mask_object(body) == body


# --------------------------------------------------------------------------------------------
# secret_strings.


def test_secret_strings_holds_encoded_and_decoded_data_and_string_data() -> None:
    body = secret(
        data={"password": b64("hunter2hunter2"), "short": b64("pw")}, stringData={"user": "admin-user"}
    )
    assert set(secret_strings(body)) == {b64("hunter2hunter2"), "hunter2hunter2", b64("pw"), "admin-user"}


def test_secret_strings_are_longest_first() -> None:
    got = secret_strings(secret(stringData={"a": "abcd", "b": "abcdefgh", "c": "abcdef"}))
    assert got == ["abcdefgh", "abcdef", "abcd"]


def test_secret_strings_include_masked_env_values_and_secrets_inside_last_applied() -> None:
    last = json.dumps(secret(stringData={"password": "inner-password"}))
    body = deployment({"name": "API_TOKEN", "value": "tok-123456"}, {"name": "LEVEL", "value": "debug"})
    body["metadata"]["annotations"] = {LAST_APPLIED: last}
    got = secret_strings(body)
    assert {"tok-123456", "inner-password", last} <= set(got)
    assert "debug" not in got


def test_secret_strings_of_a_list_cover_every_item() -> None:
    body = {
        "kind": "List",
        "items": [secret(stringData={"a": "first-secret"}), secret(stringData={"b": "second-secret"})],
    }
    assert set(secret_strings(body)) == {"first-secret", "second-secret"}


def test_secret_strings_of_a_harmless_object_are_empty() -> None:
    assert secret_strings({"kind": "ConfigMap", "data": {"a": "visible-value"}}) == []


# --------------------------------------------------------------------------------------------
# Properties.

KEYS = st.text(min_size=1, max_size=12)
VALUES = st.text(min_size=1, max_size=40)
BYTES = st.binary(min_size=1, max_size=40)
SECRETS = st.builds(
    lambda data, string_data, kind: {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": "s"},
        "data": data,
        "stringData": string_data,
    },
    st.dictionaries(KEYS, BYTES.map(lambda raw: base64.b64encode(raw).decode()), max_size=5),
    st.dictionaries(KEYS, VALUES, max_size=5),
    st.sampled_from(["Secret", "secret"]),
)


def _blank(body: dict[str, Any]) -> dict[str, Any]:
    return {
        **body,
        "data": dict.fromkeys(body["data"], ""),
        "stringData": dict.fromkeys(body["stringData"], ""),
    }


@settings(max_examples=200, deadline=None)
@given(body=SECRETS)
def test_masking_a_secret_does_not_depend_on_its_values(body: dict[str, Any]) -> None:
    assert mask_object(body) == mask_object(_blank(body))


@settings(max_examples=200, deadline=None)
@given(body=SECRETS)
def test_no_secret_value_nor_its_decoding_appears_in_the_masked_json(body: dict[str, Any]) -> None:
    structure = json.dumps(mask_object(_blank(body)), ensure_ascii=False)
    dump = json.dumps(mask_object(body), ensure_ascii=False)
    plain = [*body["stringData"].values(), *body["data"].values()]
    decoded = [base64.b64decode(v).decode("utf-8", "replace") for v in body["data"].values()]
    for value in plain + decoded:
        assume(value not in structure)  # a value equal to a key or to REDACTED cannot be told apart
        assert value not in dump


@settings(max_examples=200, deadline=None)
@given(body=SECRETS)
def test_secret_strings_cover_every_value_long_enough_to_scrub(body: dict[str, Any]) -> None:
    got = set(secret_strings(body))
    for value in [*body["stringData"].values(), *body["data"].values()]:
        if len(value) >= 4:
            assert value in got


ENV = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["LEVEL", "TOKEN", "DB_PASSWORD", "PORT"]), "value": VALUES}
    ),
    max_size=5,
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=15,
)


@settings(max_examples=200, deadline=None)
@given(
    body=st.one_of(
        SECRETS,
        ENV.map(lambda env: deployment(*env)),
        st.dictionaries(
            st.sampled_from(["kind", "data", "stringData", "metadata", "items", "spec", "env"]), JSON
        ),
    )
)
def test_masking_is_idempotent(body: dict[str, Any]) -> None:
    once = mask_object(body)
    assert mask_object(once) == once


@settings(max_examples=200, deadline=None)
@given(env=ENV)
def test_env_values_of_secret_named_vars_never_survive(env: list[dict[str, Any]]) -> None:
    masked = env_of(mask_object(deployment(*env)))
    for before, after in zip(env, masked, strict=True):
        if before["name"] in ("TOKEN", "DB_PASSWORD"):
            assert after["value"] == REDACTED
        elif not looks_secret(before["value"]):
            assert after == before
