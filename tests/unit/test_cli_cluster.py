"""``ckecli cluster validate FILE|- [-o yaml|json] [--constraints FILE] [-q]``.

Two ways in: ``ckecli()`` runs the installed console script in a subprocess
(real exit codes, real stdin, real stderr), and ``inproc()`` calls
``run_cli`` in this process with argv and stdin patched, which is much
faster and goes through the same error handling as ``main()``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from ckecli_runner import Cli, Result, inproc_cli, installed_cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CLUSTER_EXAMPLES = ["cluster.yml", "cluster-minimal.yml", "cluster.json"]


#: Run the installed ``ckecli`` as an operator would.
ckecli = installed_cli
Inproc = Cli


@pytest.fixture
def inproc(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Inproc:
    """Run ``ckecli`` through ``run_cli`` (what ``main()`` does) inside this process."""
    return inproc_cli(monkeypatch, capsys)


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def minimal(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "test",
        "nodes": [{"address": "10.0.0.11", "user": "cybozu", "control_plane": True}],
        "service_subnet": "10.68.0.0/16",
    }
    doc.update(changes)
    return doc


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.err
    assert "Traceback" not in result.out


# --- the examples ------------------------------------------------------------------------


@pytest.mark.parametrize("example", CLUSTER_EXAMPLES)
def test_examples_are_valid_without_warnings(example: str) -> None:
    result = ckecli("cluster", "validate", EXAMPLES / example)
    assert (result.code, result.err) == (0, "")
    data = yaml.safe_load(result.out)
    assert isinstance(data, dict)
    assert data["options"]["etcd"]["volume_name"]  # defaults are shown
    assert data["options"]["kubelet"]["cri_endpoint"] == "/run/containerd/containerd.sock"


def test_full_example_sets_every_section(inproc: Inproc) -> None:
    result = inproc("cluster", "validate", EXAMPLES / "cluster.yml")
    assert (result.code, result.err) == (0, "")
    data = yaml.safe_load(result.out)
    assert [n["control_plane"] for n in data["nodes"]] == [True] * 3 + [False] * 3
    assert [n["address"] for n in data["nodes"]] == [f"10.0.0.{i}" for i in range(11, 17)]
    assert data["options"]["kube-proxy"]["config"]["mode"] == "ipvs"
    assert data["options"]["kube-api"]["audit_log_enabled"] is True
    assert yaml.safe_load(data["options"]["kube-api"]["audit_log_policy"])["kind"] == "Policy"
    conflist = json.loads(data["options"]["kubelet"]["cni_conf_file"]["content"])
    assert conflist["plugins"]
    for section in ("reboot", "repair"):
        assert data[section]["protected_namespaces"], section
        assert data[section]["protected_job_pods"], section
    steps = data["repair"]["repair_procedures"][0]["repair_operations"][0]["repair_steps"]
    assert any(s["need_drain"] for s in steps)
    assert all("watch_seconds" in s for s in steps)
    assert data["sabakan"]["spare_node_taint_key"]
    assert data["trusted_rest_mappings"]
    for component in (
        "etcd",
        "rivers",
        "etcd-rivers",
        "kube-api",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-proxy",
        "kubelet",
    ):
        params = data["options"][component]
        assert params["extra_args"] or params["extra_binds"] or params["extra_env"], component


def test_examples_match_the_example_constraints() -> None:
    result = ckecli(
        "cluster",
        "validate",
        "-q",
        "--constraints",
        EXAMPLES / "constraints.yml",
        EXAMPLES / "cluster.yml",
    )
    assert result == Result(0, "", "")


def test_minimal_example_is_minimal(inproc: Inproc) -> None:
    """Removing any single field of the minimal example gives an error or a warning."""
    doc = yaml.safe_load((EXAMPLES / "cluster-minimal.yml").read_text())
    assert doc == minimal(name="minimal")
    removals = [(doc, key) for key in doc] + [(doc["nodes"][0], key) for key in doc["nodes"][0]]
    assert len(removals) == 6
    for parent, key in removals:
        value = parent.pop(key)
        result = inproc("cluster", "validate", "-q", "-", stdin=json.dumps(doc))
        parent[key] = value
        assert result.err != "", key


@pytest.mark.parametrize("example", CLUSTER_EXAMPLES)
@pytest.mark.parametrize("output", ["yaml", "json"])
def test_normalised_output_is_a_fixed_point(
    inproc: Inproc, tmp_path: Path, example: str, output: str
) -> None:
    first = inproc("cluster", "validate", "-o", output, EXAMPLES / example)
    assert (first.code, first.err) == (0, "")
    again = inproc("cluster", "validate", "-o", output, write(tmp_path, "again", first.out))
    assert again == first


@pytest.mark.parametrize("example", CLUSTER_EXAMPLES)
def test_json_output_has_the_same_data_as_yaml(inproc: Inproc, example: str) -> None:
    as_yaml = inproc("cluster", "validate", EXAMPLES / example)
    as_json = inproc("cluster", "validate", "--output", "json", EXAMPLES / example)
    assert as_yaml.code == as_json.code == 0
    assert json.loads(as_json.out) == yaml.safe_load(as_yaml.out)
    assert as_json.out.startswith("{\n")
    assert as_json.out.endswith("}\n")


def test_yaml_output_keeps_multiline_strings_as_blocks(inproc: Inproc) -> None:
    result = inproc("cluster", "validate", EXAMPLES / "cluster.yml")
    assert "    audit_log_policy: |\n      apiVersion: audit.k8s.io/v1\n" in result.out
    assert "      content: |\n        {\n" in result.out


def test_quiet_prints_nothing(inproc: Inproc) -> None:
    assert inproc("cluster", "validate", "-q", EXAMPLES / "cluster.yml") == Result(0, "", "")


# --- standard input ----------------------------------------------------------------------


def test_stdin_yaml() -> None:
    text = (EXAMPLES / "cluster.yml").read_text()
    from_stdin = ckecli("cluster", "validate", "-", stdin=text)
    from_file = ckecli("cluster", "validate", EXAMPLES / "cluster.yml")
    assert from_stdin.code == 0
    assert from_stdin == from_file


def test_stdin_json(inproc: Inproc) -> None:
    result = inproc("cluster", "validate", "-o", "json", "-", stdin=json.dumps(minimal()))
    assert result.code == 0
    assert json.loads(result.out)["name"] == "test"


def test_stdin_errors() -> None:
    result = ckecli("cluster", "validate", "-", stdin="name: x\nnodes: []\n")
    assert result == Result(
        1,
        "",
        "nodes: required: at least one node\n"
        "service_subnet: required: a CIDR such as 10.68.0.0/16\n",
    )


# --- errors ------------------------------------------------------------------------------


def test_broken_file_lists_every_problem(tmp_path: Path) -> None:
    doc = minimal(servce_subnet="10.0.0.0/8", dns_servers="8.8.8.8")
    doc["nodes"].append({"address": "10.0.0.11", "user": "cybozu", "taints": [{"key": "k"}]})
    doc["nodes"][0]["control_plane"] = "yes"
    result = ckecli("cluster", "validate", write(tmp_path, "cluster.yml", yaml.safe_dump(doc)))
    assert result.code == 1
    assert result.out == ""
    assert result.err_lines == [
        "nodes[0].control_plane: expected true or false, got string 'yes'",
        "dns_servers: expected a list, got string '8.8.8.8'",
        "servce_subnet: unknown field 'servce_subnet'; did you mean 'service_subnet'?",
        "nodes[1].address: 10.0.0.11 duplicates nodes[0]",
        "nodes[1].taints[0].effect: '' is not one of NoSchedule, PreferNoSchedule, NoExecute",
    ]


def test_yaml_syntax_error(inproc: Inproc, tmp_path: Path) -> None:
    path = write(tmp_path, "c.yml", "name: x\nnodes:\n  - address: [\n")
    result = inproc("cluster", "validate", path)
    assert result.code == 1
    assert result.err_lines == [
        "YAML syntax error: line 4, column 1: while parsing a flow node "
        "expected the node content, but found '<stream end>'"
    ]


def test_duplicate_key(inproc: Inproc, tmp_path: Path) -> None:
    path = write(tmp_path, "c.yml", "name: x\nname: y\n")
    result = inproc("cluster", "validate", path)
    assert result == Result(
        1, "", "YAML syntax error: line 2, column 1: duplicate key 'name' (first given on line 1)\n"
    )


def test_json_duplicate_key(inproc: Inproc, tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", '{"name": "x", "name": "y"}')
    result = inproc("cluster", "validate", path)
    assert result == Result(1, "", "JSON syntax error: duplicate key 'name'\n")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.yml", "ckecli: {path}: no such file"),
        (lambda d: d, "ckecli: {path}: is a directory"),
        (
            lambda d: write(d, "bin.yml", b"name: \xff\xfe\x00binary"),
            "ckecli: {path}: not UTF-8 text (byte 6)",
        ),
        (lambda d: write(d, "empty.yml", ""), "the document is empty"),
        (lambda d: write(d, "blank.yml", "\n# nothing\n"), "the document is empty"),
        (lambda d: write(d, "list.yml", "- name: x\n"), "expected a mapping, got a list"),
        (lambda d: write(d, "list.json", "[]"), "expected a mapping, got a list"),
        (lambda d: write(d, "scalar.yml", "3\n"), "expected a mapping, got number 3"),
        (
            lambda d: write(d, "ctrl.yml", "name: \x1b[31mred\n"),
            "YAML syntax error: line 1, column 7: unacceptable character #x001b: "
            "special characters are not allowed",
        ),
        (
            lambda d: write(d, "deep.yml", "name: " + "[" * 200 + "]" * 200),
            "YAML error: nested deeper than 100 levels",
        ),
    ],
)
def test_unusable_input_gives_one_line_and_exit_1(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    path = make(tmp_path)
    result = ckecli("cluster", "validate", path)
    assert_no_traceback(result)
    assert (result.code, result.out) == (1, "")
    assert result.err_lines == [message.format(path=path)]


@pytest.mark.parametrize(
    "stdin",
    [b"", b"\xff\xfe\x00", b"- a\n- b\n", b"{", b"name: [", b"\x00" * 10, b"{" * 10_000],
)
def test_bad_stdin_never_shows_a_traceback(stdin: bytes) -> None:
    result = ckecli("cluster", "validate", "-", stdin=stdin)
    assert_no_traceback(result)
    assert result.code == 1
    assert result.out == ""
    assert len(result.err_lines) == 1


def test_usage_errors_exit_2(inproc: Inproc) -> None:
    missing = inproc("cluster", "validate")
    assert missing.code == 2
    assert "Missing argument 'FILE|-'" in missing.err
    wrong = inproc("cluster", "validate", "-o", "xml", EXAMPLES / "cluster.yml")
    assert wrong.code == 2
    assert "'xml' is not one of 'yaml', 'json'" in wrong.err
    assert_no_traceback(wrong)


def test_help(inproc: Inproc) -> None:
    result = inproc("cluster", "validate", "--help")
    assert result.code == 0
    assert "--constraints FILE" in result.out


# --- warnings ----------------------------------------------------------------------------


def test_warnings_go_to_stderr_and_exit_0(inproc: Inproc, tmp_path: Path) -> None:
    doc = minimal(reboot={"reboot_command": ["reboot"]})
    doc["nodes"][0]["control_plane"] = False
    result = inproc("cluster", "validate", write(tmp_path, "c.yml", yaml.safe_dump(doc)))
    assert result.code == 0
    assert result.err_lines == [
        "warning: nodes: no node has control_plane: true; nothing can run",
        "warning: reboot.boot_check_command: empty while the other command is set: "
        "the reboot queue will not run",
    ]
    assert yaml.safe_load(result.out)["nodes"][0]["control_plane"] is False


def test_warnings_are_printed_even_when_quiet(inproc: Inproc, tmp_path: Path) -> None:
    doc = minimal()
    doc["nodes"][0]["control_plane"] = False
    result = inproc("cluster", "validate", "-q", write(tmp_path, "c.json", json.dumps(doc)))
    assert result == Result(
        0, "", "warning: nodes: no node has control_plane: true; nothing can run\n"
    )


# --- constraints -------------------------------------------------------------------------


def test_constraints_mismatch(tmp_path: Path) -> None:
    constraints = write(tmp_path, "cstr.yml", "control-plane-count: 1\n")
    result = ckecli("cluster", "validate", "--constraints", constraints, EXAMPLES / "cluster.yml")
    assert result == Result(
        1, "", "nodes: 3 control plane(s), but the constraint control-plane-count is 1\n"
    )


def test_constraints_match(inproc: Inproc, tmp_path: Path) -> None:
    constraints = write(tmp_path, "cstr.yml", "control-plane-count: 1\n")
    result = inproc(
        "cluster", "validate", "--constraints", constraints, EXAMPLES / "cluster-minimal.yml"
    )
    assert (result.code, result.err) == (0, "")
    assert yaml.safe_load(result.out)["name"] == "minimal"


def test_constraints_default_to_one_control_plane(inproc: Inproc, tmp_path: Path) -> None:
    constraints = write(tmp_path, "cstr.yml", "{}\n")
    result = inproc("cluster", "validate", "--constraints", constraints, EXAMPLES / "cluster.yml")
    assert result.code == 1
    assert result.err_lines == [
        "nodes: 3 control plane(s), but the constraint control-plane-count is 1"
    ]


def test_invalid_constraints_are_prefixed(inproc: Inproc, tmp_path: Path) -> None:
    text = "control-plane-count: 0\ncontrol_plane_count: 3\nminimum-workers-rate: x\n"
    constraints = write(tmp_path, "cstr.yml", text)
    result = inproc("cluster", "validate", "--constraints", constraints, EXAMPLES / "cluster.yml")
    assert result.code == 1
    assert result.err_lines == [
        "constraints.minimum-workers-rate: expected an integer, got string 'x'",
        "constraints.control_plane_count: unknown field 'control_plane_count'; "
        "did you mean 'control-plane-count'?",
        "constraints.control-plane-count: must be positive",
    ]


def test_constraints_syntax_error(inproc: Inproc, tmp_path: Path) -> None:
    constraints = write(tmp_path, "cstr.yml", "control-plane-count: [\n")
    result = inproc("cluster", "validate", "--constraints", constraints, EXAMPLES / "cluster.yml")
    assert result.code == 1
    assert result.err_lines == [
        "constraints: YAML syntax error: line 2, column 1: while parsing a flow node "
        "expected the node content, but found '<stream end>'"
    ]


def test_missing_constraints_file(tmp_path: Path) -> None:
    missing = tmp_path / "none.yml"
    result = ckecli("cluster", "validate", "--constraints", missing, EXAMPLES / "cluster.yml")
    assert result == Result(1, "", f"ckecli: {missing}: no such file\n")


def test_cluster_and_constraints_problems_together(inproc: Inproc, tmp_path: Path) -> None:
    cluster = write(tmp_path, "c.yml", yaml.safe_dump(minimal(name="")))
    constraints = write(tmp_path, "cstr.yml", "minimum-workers-rate: 101\n")
    result = inproc("cluster", "validate", "--constraints", constraints, cluster)
    assert result.code == 1
    assert result.err_lines == [
        "name: required: the cluster name must not be empty",
        "constraints.minimum-workers-rate: must be between 0 and 100",
    ]


def test_non_utf8_standard_input_is_a_one_line_error() -> None:

    ckecli = str(Path(sys.executable).with_name("ckecli"))
    result = subprocess.run(
        [ckecli, "cluster", "validate", "-"],
        input=b"name: \xff\n",
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"},
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.decode() == "ckecli: standard input: not UTF-8 text (byte 6)\n"
