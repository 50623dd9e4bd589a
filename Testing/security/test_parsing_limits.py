"""Configs that exhaust the parser instead of running code: alias bombs, recursion, depth, size, Python tags,
wrong top-level types. Each ends quickly in a clear error; the CLI ones run as subprocesses with a timeout
(a hang fails the test)."""

import json

import pytest
from hostile import UNET_DEF, assert_user_error, cli, guard, make_bundle  # noqa: F401

from UNetSigmoidSegLib.cli import main
from UNetSigmoidSegLib.engine.loading.model import load_model
from UNetSigmoidSegLib.errors import ModelError


def _yaml_bundle(root, text):
    make_bundle(root)
    (root / "configs" / "inference.json").unlink()
    (root / "configs" / "inference.yaml").write_text(text)
    return str(root)


BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(9)
)
# 2 aliases per level, 30 levels: 60 aliases (within the alias limit) but 2**30 values once expanded
DOUBLING = "l0: &l0 [x]\n" + "".join(f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}]\n" for i in range(1, 31))
NETWORK_YAML = "network_def: " + json.dumps(UNET_DEF) + "\n"

YAML_CASES = {
    "billion laughs (nested aliases)": (NETWORK_YAML + BILLION_LAUGHS, r"more than 64 YAML aliases"),
    "doubling aliases within the alias limit": (NETWORK_YAML + DOUBLING, r"more than 200,000 values"),
    "recursive alias": (NETWORK_YAML + "loop: &loop [*loop]\n", r"nested more than 64 levels deep"),
    "recursive mapping alias": (NETWORK_YAML + "m: &m\n  self: *m\n", r"nested more than 64 levels deep"),
    "deeply nested YAML": (NETWORK_YAML + "deep: " + "[" * 500 + "]" * 500 + "\n", r"nested more than 64 levels"),
    "Python tag that runs a command": (
        NETWORK_YAML + "x: !!python/object/apply:os.system [\"touch '{marker}'\"]\n",
        r"Python tag \(!!python/…\)",
    ),
    "Python tag naming a function": ("network_def: !!python/name:os.system\n", r"Python tag"),
    "a set (not plain data)": (NETWORK_YAML + "s: !!set {a, b}\n", r"holds a set, not plain data"),
}


@pytest.mark.parametrize("name", list(YAML_CASES))
def test_hostile_yaml_is_refused(name, tmp_path, guard):  # noqa: F811
    text, expect = YAML_CASES[name]
    root = _yaml_bundle(tmp_path / "bundle", text.replace("{marker}", guard.marker()))
    with pytest.raises(ModelError, match=expect):
        load_model(root)


def test_alias_bomb_through_the_command_line_ends_at_once(tmp_path, guard):  # noqa: F811
    root = _yaml_bundle(tmp_path / "bundle", NETWORK_YAML + DOUBLING)
    guard.protect(root)
    run = cli(["inspect", root], tmp_path, timeout=60)
    assert_user_error(run.returncode, run.stderr, r"configs/inference\.yaml: it has more than 200,000 values")


def _nested(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


JSON_CASES = {
    "inference.json is a list": ("inference", [UNET_DEF], r"configs/inference must hold a mapping"),
    "metadata.json is a list": ("metadata", ["x"], r"configs/metadata must hold a mapping"),
    "JSON nested 100,000 deep": ("inference", "[" * 100_000 + "]" * 100_000, r"nested more than 64 levels deep"),
    "metadata nested 100 deep": ("metadata", {"deep": _nested(100)}, r"metadata\.json: it is nested more than 64"),
    "NaN in JSON": ("inference", '{"network_def": {"_target_": "UNet", "x": NaN}}', r"NaN is not a JSON number"),
    "not UTF-8": ("inference", b"\xff\xfe{\x00", r"not UTF-8 text"),
    "config larger than 8 MB": (
        "inference",
        json.dumps({"network_def": UNET_DEF, "pad": "x" * (9 * 2**20)}),
        r"is 9\.0 MB; config files are read only up to 8 MB",
    ),
    "channel_def keys that are not numbers": (
        "metadata",
        {"network_data_format": {"outputs": {"pred": {"channel_def": {"zero": "bg", "one": "liver"}}}}},
        r"channel_def has the key 'zero', which is not an output channel number",
    ),
    "channel_def names that are not names": (
        "metadata",
        {"network_data_format": {"outputs": {"pred": {"channel_def": {"0": {"name": "x"}}}}}},
        r"channel_def\['0'\] must be a name",
    ),
    "network_def missing": ("inference", {"preprocessing": []}, r"has no 'network_def'"),
}


@pytest.mark.parametrize("name", list(JSON_CASES))
def test_broken_bundle_json_is_a_clear_error(name, tmp_path, guard, capsys):  # noqa: F811
    which, data, expect = JSON_CASES[name]
    root = tmp_path / "bundle"
    make_bundle(root)
    target = root / "configs" / f"{which}.json"
    if isinstance(data, bytes):
        target.write_bytes(data)
    else:
        target.write_text(data if isinstance(data, str) else json.dumps(data))
    guard.protect(root)
    rc = main(["inspect", str(root)])
    assert_user_error(rc, capsys.readouterr().err, expect)


def test_network_def_given_as_a_reference_loads(tmp_path):
    """Not hostile: ``"network_def": "@net"`` is plain MONAI syntax and is resolved structurally."""
    root = make_bundle(tmp_path / "bundle", network_def="@net", net=dict(UNET_DEF))
    info = load_model(root).info
    assert info.architecture == "UNet" and info.network_args["channels"] == [4, 8, 16]
