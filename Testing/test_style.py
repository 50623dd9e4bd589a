"""Style rules ruff has no switch for: one name per assignment in the product code."""

import ast
from pathlib import Path

import pytest

CODE = Path(__file__).resolve().parents[1] / "UNetSigmoidSeg"


@pytest.mark.parametrize("path", sorted(CODE.rglob("*.py")), ids=lambda p: str(p.relative_to(CODE)))
def test_no_statement_assigns_three_or_more_names_at_once(path):
    """``a, b, c = x, y, z`` and ``a = b = c = None`` hide which value goes where; unpacking a call's result is fine."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign):
            names = sum(len(t.elts) if isinstance(t, ast.Tuple) else 1 for t in node.targets)
            parallel = isinstance(node.value, ast.Tuple) or len(node.targets) > 1
            if names >= 3 and parallel:
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert not found, "\n".join(found)
