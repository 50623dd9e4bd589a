"""The signatures of Slicer's ``slicer.util`` functions, read from the real ``Base/Python/slicer/util.py`` of every
Slicer release in ``generate.CONFIGURATIONS`` (5.8.0, 5.10.0, main) into ``slicer_util.json``.

``Testing/widget/test_slicer_util.py`` checks against that table that every ``slicer.util.NAME(...)`` call of the
module names a function every release defines and fits its parameters, and that the tests' stand-ins for those
functions (``fakeslicer``) take exactly the real parameters. Tests read the JSON only (no Slicer clone needed).

    python Testing/widget/qt_api/slicer_util.py --slicer /path/to/Slicer/.git
"""

import argparse
import ast
import json
import os
import subprocess
import sys
from typing import Any, Dict

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "slicer_util.json")
PATH = "Base/Python/slicer/util.py"


def signature(node: Any) -> Dict[str, Any]:
    """A function's parameters: positional names, how many of them have defaults, ``*args``, keyword-only names
    (with whether each has a default), ``**kwargs``."""
    a = node.args
    positional = [p.arg for p in list(a.posonlyargs) + list(a.args)]
    return {
        "positional": positional,
        "defaults": len(a.defaults),
        "varargs": a.vararg is not None,
        "kwonly": {p.arg: d is not None for p, d in zip(a.kwonlyargs, a.kw_defaults)},
        "varkw": a.kwarg is not None,
    }


def functions(source: str) -> Dict[str, Dict[str, Any]]:
    tree = ast.parse(source)
    return {n.name: signature(n) for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}


def main() -> int:
    sys.path.insert(0, HERE)
    from generate import CONFIGURATIONS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slicer", required=True, help="a Slicer git directory holding the releases' commits")
    args = ap.parse_args()
    releases: Dict[str, Dict[str, Any]] = {}
    refs = {}
    for label, slicer_ref, *_rest in CONFIGURATIONS:
        if slicer_ref in refs.values():
            continue  # one Slicer commit under two Qt versions: its Python is the same
        text = subprocess.run(
            ["git", "--git-dir", args.slicer, "show", f"{slicer_ref}:{PATH}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        refs[label] = slicer_ref
        releases[label] = functions(text)
    names = sorted(set().union(*releases.values()))
    table = {
        "_meta": {"source": PATH, "releases": refs},
        "functions": {n: {label: releases[label].get(n) for label in releases} for n in names},
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(table, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{OUT}: {len(names)} functions over {', '.join(refs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
