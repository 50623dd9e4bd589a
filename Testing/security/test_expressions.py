"""The side-effect-free ``$`` expression subset of untrusted configs (engine/safety/expressions.py): the Model Zoo's
forms give MONAI's values, everything else is refused — and no expression, written or fuzzed, imports, opens, runs
or spawns anything (a Python audit hook watches while each is read)."""

import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from UNetSigmoidSegLib.engine.safety.expressions import MAX_SIZE, evaluate
from UNetSigmoidSegLib.engine.safety.kinds import Refused

CONFIG = {"bundle_root": ".", "labels": ["a", "b", "c"], "n": 2, "flag": False, "size": [96, 96, 64], "net": {"k": 1}}
EVENTS = []
WATCHING = [False]
WATCHED = ("import", "open", "exec", "os.system", "subprocess.Popen", "os.posix_spawn", "os.exec", "socket.")


def _audit(event, _args):
    if WATCHING[0] and event.startswith(WATCHED):
        EVENTS.append(event)


sys.addaudithook(_audit)


def lookup(top, path):
    if top not in CONFIG:
        raise Refused("x", f"@{top} is not defined")
    value = CONFIG[top]
    for part in path:
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def read(text):
    """Evaluate with the audit hook watching; returns the value or the Refused."""
    WATCHING[0] = True
    try:
        return evaluate(text, lookup, "where")
    except Refused as exc:
        return exc
    finally:
        WATCHING[0] = False


@pytest.mark.parametrize(
    "text, value",
    [
        ("@bundle_root + '/models/model.pt'", "./models/model.pt"),
        ("torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')", None),  # the machine's
        ("torch.float32", "float32"),
        ("numpy.float32", "float32"),
        ("np.int16", "int16"),
        ("monai.utils.CommonKeys.IMAGE", "image"),
        ("len(@labels) + @n", 5),
        ("len(@size)", 3),
        ("[1.5, 1.5, 1.5] if @flag else [3.0, 3.0, 3.0]", [3.0, 3.0, 3.0]),
        ("'model.pt' if @flag else 'model_lowres.pt'", "model_lowres.pt"),
        ("@net.to(@n)", {"k": 1}),
        ("@size[2] // 2", 32),
        ("@labels", ["a", "b", "c"]),
        ("(1, 2)", [1, 2]),
        ("-@n * 3 + 1", -5),
        ("@n > 1 and 'yes' or 'no'", "yes"),
        ("'a' not in @labels", False),
    ],
)
def test_zoo_forms_give_their_values(text, value):
    got = read(text)
    assert not isinstance(got, Refused), got
    if value is None:
        import torch

        assert got == ("cuda:0" if torch.cuda.is_available() else "cpu")
    else:
        assert got == value
    assert EVENTS == []


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('touch x')",
        "open('/etc/passwd').read()",
        "exec('1')",
        "eval('1')",
        "getattr(@net, 'to')",
        "@labels.__class__.__mro__",
        "torch.load('x.pt')",
        "torch.hub.load('a', 'b')",
        "monai.bundle.ConfigParser",
        "np.load",
        "(lambda: 1)()",
        "[x for x in @labels]",
        "{**@net}",
        "f'{@n}'",
        "9 ** 9 ** 9",
        "'%s' % @n",
        "'a' * 100001",
        "[0] * (10 ** 6)",
        "@labels[0:2]",
        "@net.to(__import__('os'))",
        "torch.device('/dev/sda')",
        "len(open('x'))",
        "1 if True else exec('1')",  # refused even in a branch that would not run
        "x := 1",
        "await foo",
        "b'bytes'",
        "1j",
        "...",
        "sys.modules",
        "@labels.append(1)",
    ],
)
def test_everything_else_is_refused_naming_the_key(text):
    got = read(text)
    assert isinstance(got, Refused) and str(got).startswith("where = ")
    assert "is a Python expression: it would run code" in str(got) or "not an expression this product" in str(got)
    assert EVENTS == []


def test_sizes_are_bounded():
    assert isinstance(read("x" * 3000), Refused)  # source length
    assert isinstance(read("+".join(["1"] * 400)), Refused)  # node count
    assert isinstance(read("(" * 500 + "1" + ")" * 500), Refused)  # nesting
    assert read(f"'a' * {MAX_SIZE}") == "a" * MAX_SIZE and isinstance(read(f"'a' * {MAX_SIZE + 1}"), Refused)


TOKENS = st.sampled_from(
    "@labels @n @size @net @bundle_root 1 2 0 -1 1.5 'a' 'cpu' 'cuda:0' True None + - * / // % ** ( ) [ ] , . "
    "== < > in not and or if else len torch numpy np monai device cuda is_available float32 to __import__ os "
    "system open exec eval __class__ __globals__ lambda : for x import sys getattr CommonKeys IMAGE utils".split()
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TOKENS, min_size=1, max_size=14))
def test_fuzzed_expressions_give_plain_data_or_a_refusal_and_run_nothing(tokens):
    got = read(" ".join(tokens))
    assert EVENTS == [], (tokens, EVENTS)
    plain = (type(None), bool, int, float, str, list, dict)
    assert isinstance(got, Refused) or isinstance(got, plain), (tokens, got)
