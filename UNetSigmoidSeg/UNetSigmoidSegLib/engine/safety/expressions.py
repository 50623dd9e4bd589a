"""The side-effect-free ``$`` expressions of MONAI configs, read without trusting them: a closed grammar over ``ast``.

Model Zoo configs write plain values as expressions: ``$@x`` (an alias), ``$@bundle_root + '/models/model.pt'``,
``$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')``, ``$torch.float32``, ``$len(@labels) + 1``,
``$[1.5, 1.5, 1.5] if @flag else [1, 1, 1]``, ``$@network_def.to(@device)``. This module evaluates exactly such
forms and nothing else — never ``eval``, never an import, never a name outside its tables:

* literals (numbers, text, ``True``/``False``/``None``), lists and tuples (as lists), ``@id`` / ``@id::key``
  references (resolved by the caller, as plain data);
* ``+ - * / // %`` on numbers, ``+`` on texts or lists, ``*`` of a text or list by a whole number; unary ``- + not``;
  ``and``/``or``; comparisons (``== != < <= > >= in``, ``not in``); ``a if c else b``; indexing with a literal;
* ``len(x)``; ``torch.device(text)`` (the text: a device name); ``torch.cuda.is_available()``;
  ``@ref.to(...)`` (the same value: the product places the network itself);
* ``torch.<dtype>`` / ``numpy.<dtype>`` / ``np.<dtype>`` for the dtypes of ``DTYPES`` (their names);
  ``monai.utils.CommonKeys.IMAGE`` and its siblings (their values: ``"image"``, …).

Every node is checked before anything is evaluated (a construct outside the grammar in an untaken branch is refused
too); source length, node count and the size of every produced text or list are bounded.
"""

import ast
import re
from typing import Any, Callable, List, Tuple

from .kinds import Refused

MAX_SOURCE = 2_000  # characters of one expression
MAX_NODES = 300  # syntax nodes of one expression
MAX_SIZE = 10_000  # items of a produced list, characters of a produced text
REF = re.compile(r"@(\w+)((?:(?:::|#)\w+)*)")
DEVICE = re.compile(r"cpu|cuda(:\d{1,2})?|mps")
DTYPE_NAMES = {
    "float16": "float16",
    "half": "float16",
    "float32": "float32",
    "float": "float32",
    "float64": "float64",
    "double": "float64",
    "bfloat16": "bfloat16",
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "int32": "int32",
    "int": "int32",
    "int64": "int64",
    "long": "int64",
    "bool": "bool",
    "bool_": "bool",
}
MODULES = ("torch", "numpy", "np", "monai")
CONSTANTS = {  # MONAI's key names, as configs spell them
    f"monai.utils.{where}CommonKeys.{key}": key.lower()
    for where in ("", "enums.")
    for key in ("IMAGE", "LABEL", "PRED", "LOSS", "METADATA")
}
# dotted names that only ever lead to an allowed call or constant (each checked where it is used)
PREFIXES = {"torch.device", "torch.cuda", "torch.cuda.is_available"} | {
    c.rsplit(".", n)[0] for c in CONSTANTS for n in (1, 2, 3)
}
OPERATORS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}
COMPARISONS = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
PLAIN = (ast.Expression, ast.Constant, ast.List, ast.Tuple, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare)
PLAIN += (ast.IfExp, ast.Subscript, ast.Load, ast.And, ast.Or, ast.USub, ast.UAdd, ast.Not)
PLAIN += tuple(OPERATORS) + tuple(COMPARISONS)
Lookup = Callable[[str, List[str]], Any]


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def evaluate(text: str, lookup: Lookup, where: str) -> Any:
    """The value of ``text`` (an expression without its ``$``); ``lookup(id, path)`` resolves a reference."""
    if len(text) > MAX_SOURCE:
        raise Refused(where, f"is an expression of {len(text):,} characters (at most {MAX_SOURCE:,} are read)")
    refs: List[Tuple[str, List[str]]] = []

    def name(match: "re.Match[str]") -> str:
        refs.append((match.group(1), [p for p in re.split("::|#", match.group(2)) if p]))
        return f"__ref{len(refs) - 1}"

    try:
        tree = ast.parse(REF.sub(name, text).strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise Refused(where, f"= {'$' + text[:60]!r} is not an expression this product can read") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise Refused(where, f"is an expression of {len(nodes)} parts (at most {MAX_NODES} are read)")
    reader = _Reader(refs, lookup, where, text)
    for node in nodes:
        reader.check(node)
    return reader.value(tree.body)


class _Reader:
    def __init__(self, refs: List[Tuple[str, List[str]]], lookup: Lookup, where: str, text: str) -> None:
        self.refs = refs
        self.lookup = lookup
        self.where = where
        self.text = text

    def refuse(self, why: str) -> Refused:
        return Refused(
            self.where,
            f"= {'$' + self.text[:60]!r} is a Python expression: it would run code (it {why}; only side-effect-free "
            "forms are read untrusted)",
        )

    # ------------------------------------------------------------ the grammar, checked before evaluating
    def check(self, node: ast.AST) -> None:
        if isinstance(node, PLAIN):
            if isinstance(node, ast.Constant) and not (
                node.value is None or isinstance(node.value, (bool, int, float, str))
            ):
                raise self.refuse(f"holds a {type(node.value).__name__} literal")
            return
        if isinstance(node, ast.Name):
            if not (self._ref_index(node.id) is not None or node.id in MODULES or node.id == "len"):
                raise self.refuse(f"names {node.id!r}")
            return
        if isinstance(node, ast.Attribute):
            if self._named_value(node) is None and not self._known_attribute(node):
                raise self.refuse(f"reads the attribute {node.attr!r}")
            return
        if isinstance(node, ast.Call):
            if node.keywords or self._call_kind(node) is None:
                raise self.refuse("calls something other than len(), torch.device(), torch.cuda.is_available()")
            return
        raise self.refuse(f"uses {type(node).__name__}")

    def _ref_index(self, name: str) -> Any:
        match = re.fullmatch(r"__ref(\d+)", name)
        return int(match.group(1)) if match and int(match.group(1)) < len(self.refs) else None

    @staticmethod
    def _dotted(node: ast.AST) -> str:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        return ".".join([node.id] + parts[::-1]) if isinstance(node, ast.Name) else ""

    def _named_value(self, node: ast.Attribute) -> Any:
        """A dtype's name or a MONAI key constant's value for a dotted name of the tables, else None."""
        dotted = self._dotted(node)
        if dotted in CONSTANTS:
            return CONSTANTS[dotted]
        parts = dotted.split(".")
        if len(parts) == 2 and parts[0] in ("torch", "numpy", "np") and parts[1] in DTYPE_NAMES:
            return DTYPE_NAMES[parts[1]]
        return None

    def _known_attribute(self, node: ast.Attribute) -> bool:
        """Attributes that only ever appear as the function of an allowed call (checked there)."""
        return self._dotted(node) in PREFIXES or (
            node.attr == "to" and isinstance(node.value, ast.Name) and self._ref_index(node.value.id) is not None
        )

    def _call_kind(self, node: ast.Call) -> Any:
        func = node.func
        dotted = self._dotted(func)
        if dotted == "len" and len(node.args) == 1:
            return "len"
        if dotted == "torch.device" and len(node.args) in (1, 2):
            return "device"
        if dotted == "torch.cuda.is_available" and not node.args:
            return "cuda"
        if isinstance(func, ast.Attribute) and func.attr == "to" and isinstance(func.value, ast.Name):
            return "to" if self._ref_index(func.value.id) is not None else None
        return None

    # ------------------------------------------------------------ evaluating (only checked nodes reach here)
    def value(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            index = self._ref_index(node.id)
            if index is None:
                raise self.refuse(f"uses {node.id!r} as a value")
            top, path = self.refs[index]
            return self.lookup(top, path)
        if isinstance(node, (ast.List, ast.Tuple)):
            return self.bounded([self.value(e) for e in node.elts])
        if isinstance(node, ast.Attribute):
            named = self._named_value(node)
            if named is None:
                raise self.refuse(f"uses {self._dotted(node) or node.attr!r} as a value")
            return named
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.IfExp):
            return self.value(node.body) if self.value(node.test) else self.value(node.orelse)
        if isinstance(node, ast.BoolOp):
            result = self.value(node.values[0])
            for item in node.values[1:]:
                if bool(result) == isinstance(node.op, ast.Or):
                    return result
                result = self.value(item)
            return result
        if isinstance(node, ast.UnaryOp):
            operand = self.value(node.operand)
            if isinstance(node.op, ast.Not):
                return not operand
            if not is_number(operand):
                raise self.refuse("negates something that is not a number")
            return -operand if isinstance(node.op, ast.USub) else +operand
        if isinstance(node, ast.BinOp):
            return self.binary(node.op, self.value(node.left), self.value(node.right))
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Subscript):
            return self.index(node)
        raise self.refuse(f"uses {type(node).__name__}")

    def bounded(self, value: Any) -> Any:
        if isinstance(value, (str, list)) and len(value) > MAX_SIZE:
            raise self.refuse(f"makes a value of {len(value):,} items (at most {MAX_SIZE:,})")
        return value

    def binary(self, op: ast.operator, left: Any, right: Any) -> Any:
        if is_number(left) and is_number(right):
            try:
                return OPERATORS[type(op)](left, right)
            except (ZeroDivisionError, OverflowError) as exc:
                raise self.refuse(f"fails: {exc}") from None
        if isinstance(op, ast.Add) and type(left) is type(right) and isinstance(left, (str, list)):
            return self.bounded(self.bounded(left) + right)
        if isinstance(op, ast.Mult) and isinstance(left, (str, list)) and isinstance(right, int):
            if isinstance(right, bool) or len(left) * max(right, 0) > MAX_SIZE:
                raise self.refuse(f"repeats a value to more than {MAX_SIZE:,} items")
            return left * right
        raise self.refuse(f"applies {type(op).__name__} to {type(left).__name__} and {type(right).__name__}")

    def compare(self, node: ast.Compare) -> Any:
        left = self.value(node.left)
        for op, item in zip(node.ops, node.comparators):
            right = self.value(item)
            try:
                if not COMPARISONS[type(op)](left, right):
                    return False
            except TypeError:
                raise self.refuse(f"compares {type(left).__name__} with {type(right).__name__}") from None
            left = right
        return True

    def index(self, node: ast.Subscript) -> Any:
        container = self.value(node.value)
        key_node = node.slice.value if type(node.slice).__name__ == "Index" else node.slice  # Python 3.8 wraps it
        key = self.value(key_node)
        try:
            if (
                isinstance(container, dict)
                and isinstance(key, str)
                or isinstance(container, (list, str))
                and (isinstance(key, int) and not isinstance(key, bool))
            ):
                return container[key]
        except (KeyError, IndexError):
            raise self.refuse(f"indexes with {key!r}, which is not there") from None
        raise self.refuse(f"indexes a {type(container).__name__} with a {type(key).__name__}")

    def call(self, node: ast.Call) -> Any:
        kind = self._call_kind(node)
        if kind == "len":
            value = self.value(node.args[0])
            if not isinstance(value, (str, list, dict)):
                raise self.refuse(f"takes len() of a {type(value).__name__}")
            return len(value)
        if kind == "device":
            args = [self.value(a) for a in node.args]
            name = args[0] if len(args) == 1 else f"{args[0]}:{args[1]}"
            if not isinstance(name, str) or not DEVICE.fullmatch(name):
                raise self.refuse(f"names the device {name!r}")
            return name
        if kind == "cuda":
            import torch

            return bool(torch.cuda.is_available())
        for arg in node.args:  # .to(…): its arguments are read (checked), the value is the same
            self.value(arg)
        return self.value(node.func.value)
