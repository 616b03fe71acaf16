"""Import policy decisions and the Go templates they use: the shipped policies
(manifests/import-policies) over Cluster API-, Karmada- and KubeVela-shaped objects."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterpedia.gotemplate import Budget, BudgetExceeded, TemplateError, render
from clusterpedia.importing import (
    PolicyError,
    auth_changes,
    holds,
    lifecycle_for,
    pediacluster_spec,
    policy_source,
    references_of,
)
from clusterpedia.operator.import_policies import owned_by, wanted_lifecycles

POLICIES = Path(__file__).resolve().parents[2] / "manifests" / "import-policies"


def policy(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((POLICIES / f"{name}.yaml").read_text())
    loaded["metadata"]["uid"] = "u-1"
    return loaded


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_cluster_api_waits_for_its_control_plane_then_uses_the_kubeconfig_secret() -> None:
    chosen = policy("cluster-api")
    source = policy_source(chosen["spec"])
    capi: dict[str, Any] = {
        "metadata": {"name": "c1", "namespace": "fleet"},
        "status": {"conditions": [{"type": "ControlPlaneInitialized", "status": "False"}]},
    }
    lifecycle = lifecycle_for(chosen, source, "v1beta1", capi)
    assert lifecycle is not None and lifecycle["metadata"]["name"] == "capi-fleet-c1"
    spec = lifecycle["spec"]
    assert spec["source"] == {
        "group": "cluster.x-k8s.io", "version": "v1beta1", "resource": "clusters",
        "namespace": "fleet", "name": "c1",
    }  # fmt: skip
    (reference,) = references_of(spec, capi)
    assert (reference.namespace, reference.name, reference.resource) == (
        "fleet", "c1-kubeconfig", "secrets",
    )  # fmt: skip
    secret = {"data": {"value": b64("apiVersion: v1\nkind: Config\n")}}
    assert pediacluster_spec(spec, capi, {"kubeconfig": secret}) is None  # not initialized
    capi["status"]["conditions"][0]["status"] = "True"
    made = pediacluster_spec(spec, capi, {"kubeconfig": secret})
    assert made is not None and made["kubeconfig"] == secret["data"]["value"]
    assert made["syncResources"][1] == {"group": "apps", "resources": ["*"]}


def test_karmada_needs_an_endpoint_and_readiness() -> None:
    chosen = policy("karmada")
    member = {
        "metadata": {"name": "member1"},
        "spec": {"apiEndpoint": "https://m1:6443",
                 "secretRef": {"namespace": "karmada-cluster", "name": "member1"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }  # fmt: skip
    lifecycle = lifecycle_for(chosen, policy_source(chosen["spec"]), "v1alpha1", member)
    assert lifecycle is not None and lifecycle["metadata"]["name"] == "karmada-member1"
    secret = {"data": {"token": b64("t"), "caBundle": b64("ca")}}
    made = pediacluster_spec(lifecycle["spec"], member, {"secret": secret})
    assert made is not None
    assert (made["apiserver"], made["tokenData"], made["caData"]) == (
        "https://m1:6443", b64("t"), b64("ca"),
    )  # fmt: skip
    member["spec"]["apiEndpoint"] = ""
    assert pediacluster_spec(lifecycle["spec"], member, {"secret": secret}) is None


def test_kubevela_selects_only_its_x509_credentials() -> None:
    chosen = policy("kubevela")
    source = policy_source(chosen["spec"])
    credential = {
        "metadata": {"name": "edge", "namespace": "vela-system",
                     "labels": {"cluster.core.oam.dev/cluster-credential-type": "X509Certificate"}},
        "data": {"endpoint": b64("https://edge:6443"), "ca.crt": "Q0E=", "tls.crt": "Q1JU",
                 "tls.key": "S0VZ"},
    }  # fmt: skip
    lifecycle = lifecycle_for(chosen, source, "v1", credential)
    assert lifecycle is not None and lifecycle["metadata"]["name"] == "vela-edge"
    made = pediacluster_spec(lifecycle["spec"], credential, {})
    assert made is not None and made["apiserver"] == "https://edge:6443"
    assert (made["caData"], made["certData"], made["keyData"]) == ("Q0E=", "Q1JU", "S0VZ")
    for other in (
        {**credential, "metadata": {**credential["metadata"], "namespace": "default"}},
        {**credential, "metadata": {**credential["metadata"], "labels": {}}},
        {"metadata": {"name": "x", "namespace": "vela-system"}},
    ):
        assert lifecycle_for(chosen, source, "v1", other) is None


def test_only_credentials_are_updated_after_creation() -> None:
    current = {"apiserver": "https://a", "tokenData": "old", "syncResources": [{"group": ""}]}
    wanted = {"apiserver": "https://a", "tokenData": "new", "syncResources": []}
    assert auth_changes(current, wanted) == {"tokenData": "new"}
    assert auth_changes(wanted, wanted) == {}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"nameTemplate": "x"}, "spec.source.resource is required"),
        ({"source": {"resource": "clusters"}}, "spec.nameTemplate is required"),
        ({"source": {"resource": "c"}, "nameTemplate": "{{ if .x }}"}, "has no {{ end }}"),
        ({"source": {"resource": "c"}, "nameTemplate": "{{ lookup .x }}"}, "not supported"),
        ({"source": {"resource": "c"}, "nameTemplate": "n", "template": "{{ .a"}, "unclosed"),
    ],
)
def test_bad_policies_are_refused_with_the_reason(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        policy_source(spec)


def test_a_name_that_is_not_an_object_name_is_refused() -> None:
    spec = {"source": {"resource": "c"}, "nameTemplate": "Upper_{{ .source.x }}"}
    bad = {"metadata": {"name": "p"}, "spec": spec}
    with pytest.raises(PolicyError, match="does not render a valid object name"):
        lifecycle_for(bad, policy_source(bad["spec"]), "v1", {"metadata": {"name": "a"}})


@pytest.mark.parametrize(
    ("template", "data", "expected"),
    [
        ("{{ .a.b }}", {"a": {"b": 1}}, "1"),
        ("{{ .a.missing }}", {"a": {}}, "<no value>"),
        ("{{ if eq 1 2 }}a{{ else if eq 1 1 }}b{{ else }}c{{ end }}", {}, "b"),
        (
            "{{- range $k, $v := .m }}{{ $k }}={{ $v }};{{ end -}}",
            {"m": {"b": 2, "a": 1}},
            "a=1;b=2;",
        ),
        ("{{ range .l }}{{ . }}{{ else }}empty{{ end }}", {"l": []}, "empty"),
        ("{{ with .x }}{{ . }}{{ else }}none{{ end }}", {"x": ""}, "none"),
        ('{{ .a | default "d" | quote }}', {}, '"d"'),
        ('{{ index .m "k.v" | b64dec | upper }}', {"m": {"k.v": "aGk="}}, "HI"),
        ("{{ $x := .a }}{{ $x }}", {"a": "y"}, "y"),
        ("{{ and 1 0 }} {{ or 0 2 }} {{ not 0 }}", {}, "0 2 true"),
        ("{{ len .l }}", {"l": [1, 2]}, "2"),
        ('{{ printf "%s-%d" .a 3 }}', {"a": "x"}, "x-3"),
        ("{{/* a comment */}}ok", {}, "ok"),
        ("a  {{- .x -}}  b", {"x": 1}, "a1b"),
        ("{{ toYaml .m }}", {"m": {"a": [1]}}, "a:\n- 1"),
    ],
)
def test_go_template_semantics(template: str, data: dict[str, Any], expected: str) -> None:
    assert render(template, data) == expected


def test_conditions_hold_when_they_render_true() -> None:
    assert holds("", {}) and holds("  TRUE ", {}) and not holds("yes", {})
    assert not holds("{{ .missing }}", {})
    with pytest.raises(TemplateError):
        render("{{ end }}", {})


# -- hostile templates: budgets, and nothing rendered in an error ------------------------------

SECRET = "s3cr3t-token-value"


@pytest.mark.parametrize(
    ("template", "limit"),
    [
        # nested range over a source's data: 200^3 iterations
        ("{{range .d}}{{range $.d}}{{range $.d}}x{{end}}{{end}}{{end}}", "steps"),
        # Go refuses widths above 1e6; Python would print a gigabyte
        ('{{printf "%1000000000d" 1}}', "printf width"),
        ('{{printf "%.2000000f" 1.5}}', "printf precision"),
        # a value that doubles every iteration
        ('{{$x := "ab"}}{{range .d}}{{$x = printf "%s%s" $x $x}}{{end}}', "output"),
        ('{{replace "" (printf "%900000s" "") (printf "%1000s" "")}}', "output"),
    ],
)
def test_a_template_past_its_budget_is_refused_by_the_limit(template: str, limit: str) -> None:
    data = {"d": {f"k{i}": "v" for i in range(200)}}
    with pytest.raises(BudgetExceeded) as exceeded:
        render(template, data)
    assert exceeded.value.limit == limit


def test_the_time_limit_ends_a_render() -> None:
    data = {"d": list(range(3000))}
    with pytest.raises(BudgetExceeded) as exceeded:
        render(
            "{{range .d}}{{range $.d}}{{end}}{{end}}",
            data,
            Budget(steps=10**12, seconds=0.2),
        )
    assert exceeded.value.limit == "time"


@pytest.mark.parametrize(
    "template",
    [
        # YAML that does not parse, around the token (PyYAML quotes what it found)
        "spec:\n  tokenData: '{{ .references.s.data.token }}\n",
        'spec:\n  tokenData: "{{ .references.s.data.token }}\\q"\n',
        "spec:\n  tokenData: *{{ .references.s.data.token }}\n",
        "spec:\n  tokenData: {{ .references.s.data.token }}\n  x: [\n",
        # comparisons and indexing that fail on the token
        "{{ if lt .references.s.data.token 3 }}x{{ end }}",
        "{{ index .references.s.data.token 1 }}",
    ],
)
def test_an_error_never_quotes_what_was_rendered(template: str) -> None:
    spec = {"template": template, "creationCondition": ""}
    with pytest.raises(PolicyError) as refused:
        pediacluster_spec(spec, {}, {"s": {"data": {"token": SECRET}}})
    assert SECRET not in str(refused.value)
    assert "s3cr3t" not in str(refused.value)


def test_a_name_rendered_from_data_is_not_echoed() -> None:
    spec = {"source": {"resource": "c"}, "nameTemplate": "{{ .source.spec.token }}"}
    bad = {"metadata": {"name": "p"}, "spec": spec}
    with pytest.raises(PolicyError) as refused:
        lifecycle_for(bad, policy_source(spec), "v1", {"spec": {"token": "Not_A_Name!" + SECRET}})
    assert SECRET not in str(refused.value) and refused.value.reason == "InvalidName"


@pytest.mark.parametrize("name", [".", "..", "a/b", "%2e%2e", ""])
def test_a_reference_name_must_be_an_object_name(name: str) -> None:
    spec = {"references": [{"key": "s", "resource": "secrets", "namespaceTemplate": "ns",
                            "nameTemplate": name or "{{ .source.none }}"}]}  # fmt: skip
    with pytest.raises(PolicyError):
        references_of(spec, {"metadata": {"name": "x"}})
    spec["references"][0].update(namespaceTemplate=name or "x", nameTemplate="ok")
    if name:
        with pytest.raises(PolicyError, match="valid object name"):
            references_of(spec, {"metadata": {"name": "x"}})


# -- what a policy wants when sources collide --------------------------------------------------


def _colliding_policy() -> tuple[dict[str, Any], Any]:
    """The shipped Cluster API policy: capi-<namespace>-<name>, so a/b-c and a-b/c collide."""
    chosen = policy("cluster-api")
    return chosen, policy_source(chosen["spec"])


def _cluster(namespace: str, name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "status": {}}


def test_two_sources_rendering_one_name_import_neither() -> None:
    chosen, source = _colliding_policy()
    items = [_cluster("a", "b-c"), _cluster("a-b", "c")]
    wanted, untouched, problems = wanted_lifecycles(chosen, source, "v1beta1", items, {})
    assert wanted == {} and untouched == {"capi-a-b-c"}
    assert "several sources (a-b/c, a/b-c); none is imported" in problems[0]


def test_an_existing_lifecycle_keeps_its_source_and_is_never_re_pointed() -> None:
    chosen, source = _colliding_policy()
    first = lifecycle_for(chosen, source, "v1beta1", _cluster("a", "b-c"))
    assert first is not None
    have = {"capi-a-b-c": first}
    wanted, untouched, problems = wanted_lifecycles(
        chosen, source, "v1beta1", [_cluster("a", "b-c"), _cluster("a-b", "c")], have
    )
    assert wanted == {"capi-a-b-c": first} and not untouched
    assert "stays with a/b-c" in problems[0]
    # the first source went; the second renders the name the lifecycle still follows
    wanted, untouched, problems = wanted_lifecycles(
        chosen, source, "v1beta1", [_cluster("a-b", "c")], have
    )
    assert wanted == {} and untouched == {"capi-a-b-c"}
    assert "follows a/b-c; refused for a-b/c" in problems[0]


def test_ownership_is_the_controllers_uid() -> None:
    owner = {"metadata": {"uid": "u-1"}}
    mine = {"metadata": {"ownerReferences": [{"uid": "u-1", "controller": True}]}}
    assert owned_by(mine, owner)
    assert not owned_by({"metadata": {}}, owner)
    assert not owned_by({"metadata": {"ownerReferences": [{"uid": "u-1"}]}}, owner)
    assert not owned_by(mine, {"metadata": {}})
