"""The manifest parser reads YAML/JSON the way kubectl (sigs.k8s.io/yaml, go-yaml v2) reads it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hoop_mcp.backends.k8s_manifest import manifest_json, parse_manifest
from hoop_mcp.backends.k8s_objects import KubeObject
from hoop_mcp.core.errors import InvalidInput

CM_HEAD = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n"


def rule_of(text: str, **limits: int) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse_manifest(text, **limits)
    rule: str = caught.value.details["rule_id"]
    return rule


def message_of(text: str, **limits: int) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse_manifest(text, **limits)
    return caught.value.public_message


def data_value(scalar: str) -> Any:
    (obj,) = parse_manifest(CM_HEAD + f"data:\n  v: {scalar}\n")
    return obj.body["data"]["v"]


DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: &labels {app: web}
spec:
  replicas: 3
  selector:
    matchLabels: *labels
  template:
    metadata:
      labels: *labels
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports:
        - containerPort: 8080
"""


def test_a_multi_document_bundle_becomes_objects_in_bundle_order() -> None:
    text = (
        DEPLOYMENT
        + "---\n# only a comment\n---\n"
        + CM_HEAD
        + "---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
    )
    objects = parse_manifest(text)
    assert [(o.kind, o.name, o.index, o.source) for o in objects] == [
        ("Deployment", "web", 0, "document 1"),
        ("ConfigMap", "cm", 1, "document 3"),
        ("Service", "web", 2, "document 4"),
    ]
    assert objects[0] == KubeObject(
        api_version="apps/v1",
        kind="Deployment",
        name="web",
        namespace="shop",
        body=objects[0].body,
        index=0,
        source="document 1",
    )
    assert objects[0].body["spec"]["template"]["spec"]["containers"][0]["ports"] == [{"containerPort": 8080}]
    assert objects[1].namespace is None


def test_two_aliases_of_one_anchor_become_independent_copies() -> None:
    (obj,) = parse_manifest(DEPLOYMENT)
    selector = obj.body["spec"]["selector"]["matchLabels"]
    template = obj.body["spec"]["template"]["metadata"]["labels"]
    anchored = obj.body["metadata"]["labels"]
    assert selector == template == anchored == {"app": "web"}
    assert len({id(selector), id(template), id(anchored)}) == 3
    selector["app"] = "changed"
    assert template == {"app": "web"}


@pytest.mark.parametrize(
    ("scalar", "expected"),
    [
        # YAML 1.1 booleans, as go-yaml v2 reads them (PyYAML alone misses y/n)
        *[(word, True) for word in ["y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"]],
        *[
            (word, False)
            for word in ["n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"]
        ],
        *[(word, word) for word in ["yEs", "oN", "t", "f", "nO", "TRue"]],
        # nulls
        ("~", None),
        ("null", None),
        ("Null", None),
        ("NULL", None),
        ("", None),
        ("nil", "nil"),
        # integers: Go's ParseInt with base 0, after dropping underscores
        ("42", 42),
        ("-42", -42),
        ("+42", 42),
        ("0x1F", 31),
        ("0X1f", 31),
        ("-0x10", -16),
        ("0o17", 15),
        ("017", 15),
        ("0b1010", 10),
        ("-0b11", -3),
        ("1_000", 1000),
        ("0", 0),
        ("9223372036854775807", 9223372036854775807),
        ("18446744073709551615", 18446744073709551615),
        # leading-zero non-octal falls through to a float, which JSON writes as an integer
        ("08", 8),
        ("09.5", 9.5),
        # floats
        ("1.5", 1.5),
        (".5", 0.5),
        ("-.5", -0.5),
        ("1e3", 1000),
        ("3.0", 3),
        ("6.02e23", 6.02e23),
        ("1e400", "1e400"),
        # not numbers to go-yaml v2
        ("1:20", "1:20"),
        ("190:20:30", "190:20:30"),
        ("0x", "0x"),
        ("0xZZ", "0xZZ"),
        ("1.2.3", "1.2.3"),
        ("_1", "_1"),
        ("-x", "-x"),
        ("+", "+"),
        ("0x1p3", "0x1p3"),
        # timestamps stay strings
        ("2001-12-14", "2001-12-14"),
        ("2001-12-14t21:59:43.10-05:00", "2001-12-14t21:59:43.10-05:00"),
        ("2024-01-31T12:00:00Z", "2024-01-31T12:00:00Z"),
        # quoted and block scalars are always strings
        ('"yes"', "yes"),
        ("'0x1F'", "0x1F"),
        ('"1e3"', "1e3"),
        ('""', ""),
        ("|\n    no\n", "no\n"),
        # explicit core tags
        ("!!str 12", "12"),
        ("!!str yes", "yes"),
        ("!!int '12'", 12),
        ("!!float 1", 1),
        ("!!float 1.5", 1.5),
        ("!!bool 'on'", True),
        ("!!null ''", None),
        ("! 12", "12"),
        # the value tag PyYAML knows is a plain string here
        ("=", "="),
        ("<<", "<<"),
    ],
)
def test_a_scalar_is_read_as_go_yaml_v2_reads_it(scalar: str, expected: Any) -> None:
    value = data_value(scalar)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    "scalar",
    [".inf", ".Inf", ".INF", "+.inf", "-.inf", "-.INF", ".nan", ".NaN", ".NAN", "!!float .inf"],
)
def test_an_infinite_or_nan_number_is_refused_because_json_cannot_carry_it(scalar: str) -> None:
    assert rule_of(CM_HEAD + f"data: {{v: {scalar}}}\n") == "k8s.invalid_yaml"


@pytest.mark.parametrize(
    "scalar",
    [
        "!!binary aGVsbG8=",
        "!!timestamp 2001-12-14",
        "!!set {a}",
        "!!omap [a: 1]",
        "!custom x",
        "!!python/object:os.system x",
    ],
)
def test_a_non_core_yaml_tag_is_refused(scalar: str) -> None:
    assert rule_of(CM_HEAD + f"data:\n  v: {scalar}\n") == "k8s.invalid_yaml"


@pytest.mark.parametrize("scalar", ["!!int abc", "!!int 1.5", "!!bool 1", "!!null x", "!!float abc"])
def test_a_value_that_does_not_match_its_explicit_tag_is_refused(scalar: str) -> None:
    assert rule_of(CM_HEAD + f"data:\n  v: {scalar}\n") == "k8s.invalid_yaml"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("1", "1"),
        ("true", "true"),
        ("yes", "true"),
        ("off", "false"),
        ("0x10", "16"),
        ("'yes'", "yes"),
        ("1.0", "1"),
    ],
)
def test_a_non_string_mapping_key_becomes_the_string_kubectl_would_send(key: str, expected: str) -> None:
    (obj,) = parse_manifest(CM_HEAD + f"extra:\n  {key}: v\n")
    assert obj.body["extra"] == {expected: "v"}


@pytest.mark.parametrize("key", ["? [a, b]\n  : v", "? {a: b}\n  : v", "~: v", "1.5: v"])
def test_a_mapping_key_that_cannot_be_a_json_string_is_refused(key: str) -> None:
    assert rule_of(CM_HEAD + f"extra:\n  {key}\n") == "k8s.invalid_yaml"


@pytest.mark.parametrize(
    "text",
    [
        CM_HEAD + "data: {a: 1, a: 2}\n",
        CM_HEAD + "data:\n  a: 1\n  b: 2\n  a: 3\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\nkind: Secret\n",
        CM_HEAD + "data: {'1': x, 1: y}\n",
        CM_HEAD + "data: {true: x, yes: y}\n",
        '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "name": "b"}}',
    ],
)
def test_a_duplicate_key_is_refused_because_the_api_server_rejects_it(text: str) -> None:
    assert rule_of(text) == "k8s.duplicate_key"


def test_a_duplicate_key_message_names_the_document_and_field_path() -> None:
    message = message_of(CM_HEAD + "---\n" + CM_HEAD + "metadata2:\n  labels: {a: 1, a: 2}\n")
    assert "document 2" in message
    assert '"metadata2.labels.a"' in message
    assert "line 9" in message  # lines count from the top of the whole manifest


def test_a_merge_key_copies_the_merged_mapping_and_explicit_keys_override_it() -> None:
    text = CM_HEAD + "base: &b {x: 1, z: 2}\nextra:\n  <<: *b\n  z: 3\nmulti:\n  <<: [{a: 1}, {a: 2, b: 2}]\n"
    (obj,) = parse_manifest(text)
    assert obj.body["extra"] == {"x": 1, "z": 3}
    assert obj.body["multi"] == {"a": 1, "b": 2}
    assert obj.body["base"] == {"x": 1, "z": 2}


def test_a_quoted_merge_key_is_an_ordinary_key() -> None:
    (obj,) = parse_manifest(CM_HEAD + "extra: {'<<': 1}\n")
    assert obj.body["extra"] == {"<<": 1}


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ("extra:\n  a: 1\n  <<: {a: 2}\n", "k8s.ambiguous_merge"),
        ("extra:\n  <<: 1\n", "k8s.invalid_yaml"),
        ("extra:\n  <<: [1]\n", "k8s.invalid_yaml"),
        ("extra:\n  <<: {a: 1}\n  <<: {b: 1}\n", "k8s.duplicate_key"),
    ],
)
def test_a_merge_key_that_readers_could_disagree_on_is_refused(body: str, rule: str) -> None:
    assert rule_of(CM_HEAD + body) == rule


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_a_yaml_bomb_is_refused_before_expansion() -> None:
    assert rule_of(BILLION_LAUGHS) == "k8s.yaml_bomb"


def test_a_bomb_with_few_aliases_is_refused_by_its_expanded_size() -> None:
    # 5 levels of 9 aliases each = 45 alias uses (under max_aliases) but 9**6 nodes expanded.
    text = "\n".join(BILLION_LAUGHS.splitlines()[:6]) + "\n"
    assert rule_of(text, max_aliases=100, max_nodes=50_000) == "k8s.yaml_bomb"
    assert "expands to more than 50000" in message_of(text, max_aliases=100, max_nodes=50_000)


def test_too_many_alias_uses_are_refused() -> None:
    text = CM_HEAD + "a: &a x\nb: [" + ", ".join(["*a"] * 11) + "]\n"
    assert rule_of(text, max_aliases=10) == "k8s.yaml_bomb"
    assert parse_manifest(text, max_aliases=11)[0].body["b"] == ["x"] * 11


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "a: &a {b: *a}\n", "a: &a {b: [c, {d: *a}]}\n"])
def test_a_recursive_alias_is_refused_not_followed(text: str) -> None:
    assert rule_of(text) == "k8s.yaml_bomb"


def test_an_undefined_alias_is_a_yaml_error() -> None:
    assert rule_of(CM_HEAD + "data: {a: *nowhere}\n") == "k8s.invalid_yaml"


def test_an_anchor_does_not_leak_into_the_next_document() -> None:
    assert rule_of(CM_HEAD + "x: &a 1\n---\n" + CM_HEAD + "y: *a\n") == "k8s.invalid_yaml"


@pytest.mark.parametrize(
    ("text", "limits", "rule"),
    [
        ("a" * 101, {"max_bytes": 100}, "k8s.too_large"),
        ("é" * 51, {"max_bytes": 100}, "k8s.too_large"),  # UTF-8 bytes, not characters
        ("[" * 65 + "]" * 65, {}, "k8s.too_deep"),
        ("a: " + "{b: " * 64 + "1" + "}" * 64, {}, "k8s.too_deep"),
        ("a: &a [[[[1]]]]\nb: [[[[[[*a]]]]]]\n", {"max_depth": 8}, "k8s.too_deep"),
        ("[" * 200_000, {}, "k8s.too_deep"),
        ('{"a":' * 100_000 + "1" + "}" * 100_000, {}, "k8s.too_deep"),
        ('{"a":' * 65 + "1" + "}" * 65, {}, "k8s.too_deep"),
        ("---\n" * 3, {"max_documents": 2}, "k8s.too_many_documents"),
        ("[" + "1," * 300 + "1]", {"max_nodes": 100}, "k8s.too_large"),
    ],
)
def test_a_manifest_over_a_limit_is_refused_with_its_rule(
    text: str, limits: dict[str, int], rule: str
) -> None:
    assert rule_of(text, **limits) == rule


def test_too_many_objects_after_list_expansion_are_refused() -> None:
    items = ", ".join(f"{{apiVersion: v1, kind: ConfigMap, metadata: {{name: c{i}}}}}" for i in range(4))
    assert (
        rule_of(f"apiVersion: v1\nkind: List\nitems: [{items}]\n", max_documents=3)
        == "k8s.too_many_documents"
    )


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\x9b"])
def test_a_control_character_is_refused_with_its_position(char: str) -> None:
    text = CM_HEAD + f"data: {{a: b{char}c}}\n"
    assert rule_of(text) == "k8s.invalid_yaml"
    assert "line 4, column 12" in message_of(text)


def test_tabs_carriage_returns_and_a_byte_order_mark_are_accepted() -> None:
    (obj,) = parse_manifest("\ufeff" + CM_HEAD.replace("\n", "\r\n") + 'data: {a: "x\ty"}\r\n')
    assert obj.body["data"] == {"a": "x\ty"}


def test_a_lone_surrogate_is_refused() -> None:
    assert rule_of(CM_HEAD + "data: {a: \ud800}\n") == "k8s.invalid_yaml"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (CM_HEAD + "data: [\n", 5),
        (CM_HEAD + "data:\n  a: b: c\n", 5),
        (CM_HEAD + "data: {a: 1\n", 5),
        ("a: 'x\n", 2),
    ],
)
def test_a_syntax_error_names_its_line(text: str, line: int) -> None:
    assert rule_of(text) == "k8s.invalid_yaml"
    assert f"line {line}" in message_of(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        "# just a comment\n",
        "---\n---\n",
        "--- ~\n",
        "---\nnull\n",
        '{"apiVersion": "v1", "kind": "List", "items": []}',
    ],
)
def test_a_manifest_without_objects_is_refused_as_empty(text: str) -> None:
    assert rule_of(text) == "k8s.empty_manifest"


@pytest.mark.parametrize(
    ("text", "what"),
    [("- a\n- b\n", "a list"), ("hello\n", "a string"), ("42\n", "a number"), ("true\n", "a boolean")],
)
def test_a_document_that_is_not_a_mapping_is_refused(text: str, what: str) -> None:
    assert rule_of(text) == "k8s.not_an_object"
    assert message_of(text).startswith(f"document 1 is {what}")


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("kind: ConfigMap\nmetadata: {name: a}\n", "k8s.missing_api_version"),
        ("apiVersion: ''\nkind: ConfigMap\nmetadata: {name: a}\n", "k8s.missing_api_version"),
        ("apiVersion: 1\nkind: ConfigMap\nmetadata: {name: a}\n", "k8s.missing_api_version"),
        ("apiVersion: v1\nmetadata: {name: a}\n", "k8s.missing_kind"),
        ("apiVersion: v1\nkind: [ConfigMap]\nmetadata: {name: a}\n", "k8s.missing_kind"),
        ("apiVersion: v1\nkind: Config Map\nmetadata: {name: a}\n", "k8s.missing_kind"),
        ("apiVersion: 'apps / v1'\nkind: ConfigMap\nmetadata: {name: a}\n", "k8s.invalid_api_version"),
        ("apiVersion: a/b/v1\nkind: ConfigMap\nmetadata: {name: a}\n", "k8s.invalid_api_version"),
        ("apiVersion: v1\nkind: ConfigMap\n", "k8s.missing_name"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "k8s.missing_name"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ''}\n", "k8s.missing_name"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: 12}\n", "k8s.missing_name"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: cm-}\n", "k8s.missing_name"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: [a]\n", "k8s.invalid_metadata"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: 7}\n", "k8s.invalid_name"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: Prod}\n", "k8s.invalid_name"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: a.b}\n", "k8s.invalid_name"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\nitems: []\n", "k8s.ambiguous_list"),
    ],
)
def test_an_object_without_a_usable_identity_is_refused(text: str, rule: str) -> None:
    assert rule_of(text) == rule


def test_generate_name_is_refused_with_a_hint_to_use_a_fixed_name() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_manifest("apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: cm-}\n")
    assert "generateName" in caught.value.message
    assert caught.value.hint is not None
    assert "metadata.name" in caught.value.hint


@pytest.mark.parametrize(
    ("api_version", "kind", "name", "ok"),
    [
        ("v1", "ConfigMap", "app.config-1", True),
        ("v1", "ConfigMap", "App", False),
        ("v1", "ConfigMap", "-a", False),
        ("v1", "ConfigMap", "a" * 253, True),
        ("v1", "ConfigMap", "a" * 254, False),
        ("apps/v1", "Deployment", "web.v2", True),
        ("apps/v1", "Deployment", "web_v2", False),
        ("v1", "Service", "web", True),
        ("v1", "Service", "web.v2", False),
        ("v1", "Service", "1web", False),
        ("v1", "Service", "a" * 63, True),
        ("v1", "Service", "a" * 64, False),
        ("v1", "Namespace", "1shop", True),
        ("v1", "Namespace", "shop.eu", False),
        ("batch/v1", "CronJob", "a" * 52, True),
        ("batch/v1", "CronJob", "a" * 53, False),
        ("rbac.authorization.k8s.io/v1", "ClusterRole", "system:controller:foo", True),
        ("rbac.authorization.k8s.io/v1", "RoleBinding", "Mixed_Case:ok", True),
        ("rbac.authorization.k8s.io/v1", "Role", "a/b", False),
        ("rbac.authorization.k8s.io/v1", "Role", "a%2f", False),
        ("rbac.authorization.k8s.io/v1", "Role", "..", False),
        ("example.com/v1", "Widget", "Any_Name:x", True),
        ("example.com/v1", "Widget", "a/b", False),
        ("example.com/v1", "Service", "web.v2", True),  # a custom kind named Service is not core Service
    ],
)
def test_a_name_is_checked_with_the_rule_the_api_server_uses_for_that_kind(
    api_version: str, kind: str, name: str, ok: bool
) -> None:
    text = f"apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: '{name}'\n"
    if ok:
        assert parse_manifest(text)[0].name == name
    else:
        assert rule_of(text) == "k8s.invalid_name"


def test_an_invalid_name_message_names_the_rule_and_caps_the_echoed_name() -> None:
    message = message_of(f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {'X' * 500}\n")
    assert "DNS-1035 label" in message
    assert "X" * 78 not in message
    assert "document 1" in message


def test_an_empty_namespace_means_no_namespace() -> None:
    (obj,) = parse_manifest("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: ''}\n")
    assert obj.namespace is None


def test_a_list_is_expanded_into_its_items_with_item_sources() -> None:
    text = (
        CM_HEAD
        + "---\napiVersion: v1\nkind: List\nitems:\n"
        + "- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n"
        + "- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n"
        + "---\napiVersion: apps/v1\nkind: DeploymentList\nitems:\n"
        + "- {apiVersion: apps/v1, kind: Deployment, metadata: {name: d}}\n"
        + "---\napiVersion: v1\nkind: List\nitems: null\n"
    )
    objects = parse_manifest(text)
    assert [(o.label, o.index, o.source) for o in objects] == [
        ("ConfigMap/cm", 0, "document 1"),
        ("ConfigMap/a", 1, "document 2, item 1"),
        ("Secret/b", 2, "document 2, item 2"),
        ("Deployment/d", 3, "document 3, item 1"),
    ]


@pytest.mark.parametrize(
    ("items", "rule", "where"),
    [
        ("- {apiVersion: v1, kind: List, items: []}", "k8s.nested_list", "document 1, item 1"),
        (
            "- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- {apiVersion: v1, kind: X, items: [], metadata: {name: b}}",
            "k8s.nested_list",
            "document 1, item 2",
        ),
        ("- just a string", "k8s.not_an_object", "document 1, item 1"),
        ("- {apiVersion: v1, metadata: {name: a}}", "k8s.missing_kind", "document 1, item 1"),
        (
            "- {apiVersion: v1, kind: ConfigMap, metadata: {name: A}}",
            "k8s.invalid_name",
            "document 1, item 1",
        ),
    ],
)
def test_a_bad_list_item_is_refused_naming_the_item(items: str, rule: str, where: str) -> None:
    text = f"apiVersion: v1\nkind: List\nitems:\n{items}\n"
    assert rule_of(text) == rule
    assert where in message_of(text)


def test_list_items_that_are_not_a_list_are_refused() -> None:
    assert rule_of("apiVersion: v1\nkind: List\nitems: {a: b}\n") == "k8s.not_an_object"


def test_a_json_manifest_is_read_as_a_json_stream() -> None:
    first = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "a"},
        "data": {"on": "yes", "n": "1:20"},
    }
    second = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b"}, "x": [1.0, 2.5, 10]}
    objects = parse_manifest(" \n" + json.dumps(first) + "\n" + json.dumps(second))
    assert objects[0].body == first  # JSON has no YAML 1.1 booleans: "on"/"yes" stay as written
    assert objects[1].body["x"] == [1, 2.5, 10]
    assert type(objects[1].body["x"][0]) is int
    assert objects[1].source == "document 2"


@pytest.mark.parametrize(
    "text",
    [
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": -Infinity}',
        '{"a": 1e999}',
        '{"a": }',
        '{"a": 1} x',
        "{'a': 1}",
    ],
)
def test_invalid_json_is_refused(text: str) -> None:
    assert rule_of(text) == "k8s.invalid_yaml"


def test_a_json_stream_with_a_non_object_is_refused() -> None:
    assert (
        rule_of('{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}} [1]')
        == "k8s.not_an_object"
    )


def test_a_top_level_yaml_flow_sequence_is_read_as_yaml() -> None:
    assert rule_of("[{apiVersion: v1, kind: ConfigMap, metadata: {name: a}}]") == "k8s.not_an_object"


def test_manifest_json_is_the_canonical_utf8_json_of_the_body() -> None:
    (obj,) = parse_manifest(CM_HEAD + "data: {greeting: héllo, num: '1'}\n")
    raw = manifest_json(obj)
    assert (
        raw
        == '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm"},"data":{"greeting":"héllo","num":"1"}}'.encode()
    )
    assert json.loads(raw) == obj.body
    assert manifest_json(obj) == raw


def _walk_types(value: Any) -> set[type]:
    found = {type(value)}
    if isinstance(value, dict):
        assert all(type(k) is str for k in value)
        for v in value.values():
            found |= _walk_types(v)
    elif isinstance(value, list):
        for v in value:
            found |= _walk_types(v)
    return found


def test_the_body_holds_only_json_types() -> None:
    text = CM_HEAD + "data: {a: 1, b: 1.5, c: yes, d: ~, e: [x], f: 2001-12-14, g: {h: 0x10}}\n"
    (obj,) = parse_manifest(text)
    assert _walk_types(obj.body) <= {dict, list, str, int, float, bool, type(None)}


def test_secret_values_never_appear_in_parser_errors() -> None:
    text = (
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData:\n  password: !!int hunter2-secret\n"
    )
    assert "hunter2" not in message_of(text)
