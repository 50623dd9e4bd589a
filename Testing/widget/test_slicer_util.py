"""``slicer.util`` against the real thing: every ``slicer.util.NAME(...)`` call of the module names a function that
Slicer 5.8.0, 5.10.0 and main all define, with arguments their parameters take; and the tests' stand-ins for those
functions take exactly the real parameters. The table (``qt_api/slicer_util.json``) is read from each release's
``Base/Python/slicer/util.py`` by ``qt_api/slicer_util.py``."""

import ast
import inspect
import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

import fakeslicer
from conftest import REPO

TABLE = json.loads((REPO / "Testing" / "widget" / "qt_api" / "slicer_util.json").read_text(encoding="utf-8"))
STAND_INS = {  # what widget_fixtures installs as slicer.util.NAME
    "loadUI": fakeslicer.load_ui,
    "childWidgetVariables": fakeslicer.child_widget_variables,
    "tryWithErrorDisplay": fakeslicer.try_with_error_display,
    "errorDisplay": fakeslicer.error_display,
}


def util_calls(source: str, origin: str) -> List[Dict[str, Any]]:
    """Each ``slicer.util.NAME(...)`` call: its name, positional count, keyword names, whether it unpacks."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        f = node.func if isinstance(node, ast.Call) else None
        if (
            isinstance(f, ast.Attribute)
            and isinstance(f.value, ast.Attribute)
            and f.value.attr == "util"
            and isinstance(f.value.value, ast.Name)
            and f.value.value.id == "slicer"
        ):
            calls.append(
                {
                    "name": f.attr,
                    "args": len(node.args),
                    "keywords": [k.arg for k in node.keywords],
                    "unpacks": any(isinstance(a, ast.Starred) for a in node.args)
                    or None in [k.arg for k in node.keywords],
                    "where": f"{origin}:{node.lineno}",
                }
            )
    return calls


def problems(call: Dict[str, Any]) -> List[str]:
    """Why ``call`` would fail in some release ([] when it fits every one)."""
    releases = TABLE["functions"].get(call["name"])
    if releases is None:
        return [f"{call['where']}: slicer.util.{call['name']} is defined in no release"]
    out = []
    for release, sig in releases.items():
        if sig is None:
            out.append(f"{call['where']}: slicer.util.{call['name']} is missing in {release}")
            continue
        positional = sig["positional"]
        required = positional[: len(positional) - sig["defaults"]]
        if call["args"] > len(positional) and not sig["varargs"]:
            out.append(f"{call['where']}: {call['args']} positional arguments, {release} takes {len(positional)}")
        for name in call["keywords"]:
            if name in positional[: call["args"]]:
                out.append(f"{call['where']}: {name} given twice")
            elif name not in positional and name not in sig["kwonly"] and not sig["varkw"]:
                out.append(f"{call['where']}: keyword {name} unknown to {release}")
        missing = [p for p in required[call["args"] :] if p not in call["keywords"]]
        if missing and not call["unpacks"]:
            out.append(f"{call['where']}: {release} needs {', '.join(missing)}")
    return out


def product_calls() -> List[Dict[str, Any]]:
    product = REPO / "UNetSigmoidSeg"
    calls = []
    for path in sorted(product.rglob("*.py")):
        if "egg-info" not in str(path):
            calls += util_calls(path.read_text(encoding="utf-8"), path.relative_to(REPO).as_posix())
    return calls


def test_the_table_covers_the_three_releases():
    assert set(TABLE["_meta"]["releases"]) == {"Slicer 5.8.0", "Slicer 5.10.0", "Slicer main"}
    assert len(TABLE["functions"]) > 100 and TABLE["functions"]["pip_install"]["Slicer 5.8.0"]["positional"]


def test_every_slicer_util_call_of_the_module_fits_every_release():
    calls = product_calls()
    assert {c["name"] for c in calls} >= {"loadUI", "childWidgetVariables", "tryWithErrorDisplay", "pip_install"}
    assert [p for c in calls for p in problems(c)] == []


@pytest.mark.parametrize(
    "source, expected",
    [
        ("slicer.util.loadUI('a.ui', True)", "2 positional arguments"),
        ("slicer.util.tryWithErrorDisplay(msg, wait_cursor=True)", "keyword wait_cursor unknown"),
        ("slicer.util.loadVolume()", "needs filename"),
        ("slicer.util.loadUIFile('a.ui')", "defined in no release"),
        ("slicer.util.errorDisplay('x', None, windowTitle='t')", "windowTitle given twice"),
    ],
)
def test_the_check_catches_calls_that_would_fail_in_slicer(source, expected):
    found = [p for c in util_calls(source, "planted.py") for p in problems(c)]
    assert found and all(expected in p for p in found), found


@pytest.mark.parametrize("name", sorted(STAND_INS))
def test_each_stand_in_takes_exactly_the_real_parameters(name):
    stand_in = inspect.signature(STAND_INS[name]).parameters.values()
    kinds = inspect.Parameter
    positional = [p.name for p in stand_in if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    defaults = len([p for p in stand_in if p.name in positional and p.default is not p.empty])
    for release, sig in TABLE["functions"][name].items():
        assert positional == sig["positional"] and defaults == sig["defaults"], (name, release)
        assert any(p.kind == kinds.VAR_KEYWORD for p in stand_in) == sig["varkw"], (name, release)


def test_the_stand_ins_are_the_ones_the_fixtures_install():
    fixtures = Path(fakeslicer.__file__).with_name("widget_fixtures.py").read_text(encoding="utf-8")
    for name, stand_in in STAND_INS.items():
        assert f'setattr(slicer.util, "{name}", fakeslicer.{stand_in.__name__})' in fixtures
