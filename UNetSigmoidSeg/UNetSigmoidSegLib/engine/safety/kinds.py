"""Kinds of plain-data values an untrusted config may hold, each a checker: ``Kind.check(value, where)`` returns
the value to pass to a constructor or raises ``Refused`` naming the key path and what was expected.

Numbers are finite and within bounds, text is a plain name (never ``$``/``%``/``@``), layers are MONAI
layer-factory names (never a callable), lists are short. ``allowlist`` builds its tables from these.
"""

import math
import re
from typing import Any, Dict

MAX_LIST = 32
MAX_TEXT = 200


class Refused(Exception):
    """A config value outside the allow-list. ``where`` is its key path, the message says why."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where} {why}" if where else why)
        self.where, self.why = where, why


class Kind:
    """One kind of argument value: ``check(value, where)`` returns the value to pass, or raises ``Refused``."""

    text = "a value"

    def check(self, value: Any, where: str) -> Any:
        raise NotImplementedError

    def refuse(self, value: Any, where: str) -> Refused:
        return Refused(where, f"= {_show(value)} is not {self.text}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


class Int(Kind):
    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        self.text = f"a whole number in [{lo}, {hi}]" if lo != hi else f"{lo}"

    def check(self, value: Any, where: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not self.lo <= value <= self.hi:
            raise self.refuse(value, where)
        return value


class Num(Kind):
    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi
        self.text = f"a number in [{lo:g}, {hi:g}]"

    def check(self, value: Any, where: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.refuse(value, where)
        if not math.isfinite(value) or not self.lo <= value <= self.hi:
            raise self.refuse(value, where)
        return value


class Bool(Kind):
    text = "true or false"

    def check(self, value: Any, where: str) -> Any:
        if not isinstance(value, bool):
            raise self.refuse(value, where)
        return value


class Text(Kind):
    def __init__(self, pattern: str = r"[\w\-. ]{1,%d}" % MAX_TEXT, text: str = "a plain name") -> None:
        self.pattern, self.text = re.compile(pattern), text

    def check(self, value: Any, where: str) -> Any:
        if not isinstance(value, str) or not self.pattern.fullmatch(value):
            raise self.refuse(value, where)
        return value


class Choice(Kind):
    """One of ``names`` (case-insensitive); returns the table's spelling."""

    def __init__(self, *names: str) -> None:
        self.names = {n.lower(): n for n in names}
        self.text = "one of " + ", ".join(names)

    def check(self, value: Any, where: str) -> Any:
        if not isinstance(value, str) or value.lower() not in self.names:
            raise self.refuse(value, where)
        return self.names[value.lower()]


class Const(Kind):
    def __init__(self, value: Any) -> None:
        self.value = value
        self.text = {True: "true", False: "false", None: "null"}.get(value, repr(value))

    def check(self, value: Any, where: str) -> Any:
        if value is not self.value and not (type(value) is type(self.value) and value == self.value):
            raise self.refuse(value, where)
        return value


class ListOf(Kind):
    def __init__(self, item: Kind, min_len: int = 1, max_len: int = MAX_LIST) -> None:
        self.item = item
        self.min_len, self.max_len = min_len, max_len
        self.text = f"a list of {min_len}–{max_len} × {item.text}"

    def check(self, value: Any, where: str) -> Any:
        if not isinstance(value, list) or not self.min_len <= len(value) <= self.max_len:
            raise self.refuse(value, where)
        return [self.item.check(v, f"{where}[{i}]") for i, v in enumerate(value)]


class AnyOf(Kind):
    def __init__(self, *kinds: Kind) -> None:
        self.kinds = kinds
        self.text = " or ".join(k.text for k in kinds)

    def check(self, value: Any, where: str) -> Any:
        for kind in self.kinds:
            try:
                return kind.check(value, where)
            except Refused:
                continue
        raise self.refuse(value, where)


class Ignored(Kind):
    """Checked, then dropped: the product decides (e.g. the device)."""

    def __init__(self, kind: Kind) -> None:
        self.kind, self.text = kind, kind.text

    def check(self, value: Any, where: str) -> Any:
        return self.kind.check(value, where)


class Record(Kind):
    """A mapping with some of the listed fields, each of its kind."""

    def __init__(self, fields: Dict[str, Kind]) -> None:
        self.fields = fields
        self.text = "a mapping with fields " + ", ".join(fields)

    def check(self, value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            raise self.refuse(value, where)
        out = {}
        for key, item in value.items():
            if key not in self.fields:
                raise Refused(f"{where}.{key}", f"is not one of the accepted fields ({', '.join(self.fields)})")
            out[key] = self.fields[key].check(item, f"{where}.{key}")
        return out


def one_or_list(kind: Kind, max_len: int = MAX_LIST) -> Kind:
    return AnyOf(kind, ListOf(kind, 1, max_len))


NOTHING = Const(None)
LAYER_NAMES = (
    # monai.networks.layers.factories: Act, Norm, Dropout
    "ELU RELU LEAKYRELU PRELU RELU6 SELU CELU GELU SIGMOID TANH SOFTMAX LOGSOFTMAX SWISH MEMSWISH MISH GEGLU "
    "INSTANCE BATCH INSTANCE_NVFUSER GROUP LAYER LOCALRESPONSE SYNCBATCH DROPOUT ALPHADROPOUT"
).split()
LAYER_ARGS = (
    "affine eps momentum track_running_stats num_groups negative_slope inplace num_parameters init alpha dim p "
    "approximate beta threshold normalized_shape elementwise_affine"
).split()


class Layer(Kind):
    """A MONAI layer-factory entry: ``"prelu"`` or ``["instance", {"affine": true}]`` (never a callable)."""

    text = 'a layer name such as "prelu", or ["instance", {"affine": true}]'

    def check(self, value: Any, where: str) -> Any:
        name_kind = Choice(*LAYER_NAMES)
        if isinstance(value, str):
            return name_kind.check(value, where).lower()
        if isinstance(value, list) and len(value) == 2 and isinstance(value[1], dict):
            name = name_kind.check(value[0], f"{where}[0]").lower()
            scalar = AnyOf(Num(-1e6, 1e6), Bool(), ListOf(Int(1, 1 << 16), 1, 8))
            args = {}
            for key, arg in value[1].items():
                if key not in LAYER_ARGS:
                    raise Refused(
                        f"{where}[1].{key}", f"is not a layer setting this product accepts ({', '.join(LAYER_ARGS)})"
                    )
                args[key] = scalar.check(arg, f"{where}[1].{key}")
            return (name, args)
        raise self.refuse(value, where)


DTYPES = ("float16", "float32", "float64", "bfloat16", "int8", "uint8", "int16", "int32", "int64", "bool")
DTYPE = Choice(*DTYPES)
KEYS = AnyOf(Text(), ListOf(Text(), 1, 16))


class Axcodes(Kind):
    """An orientation code: one letter of L/R, one of A/P and one of S/I, in any order (e.g. ``RAS``)."""

    text = "an orientation code such as RAS (one of L/R, A/P, S/I each)"

    def check(self, value: Any, where: str) -> Any:
        axes = {"L": 0, "R": 0, "A": 1, "P": 1, "S": 2, "I": 2}
        if not isinstance(value, str) or len(value) != 3 or any(c not in axes for c in value.upper()):
            raise self.refuse(value, where)
        if sorted(axes[c] for c in value.upper()) != [0, 1, 2]:
            raise self.refuse(value, where)
        return value.upper()


AXCODES = Axcodes()
CHANNELS = Int(1, 4096)
SIZE = Int(-1, 2048)
KERNEL = one_or_list(Int(1, 15), 3)
STRIDE = one_or_list(Int(1, 16), 3)
DIMS = Int(2, 3)  # 3-D networks, or 2-D ones run slice by slice
INTERP = Choice("nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear", "area")
PAD = Choice("constant", "edge", "linear_ramp", "maximum", "mean", "median", "minimum", "reflect", "symmetric", "wrap")
UPSAMPLE = Choice("deconv", "deconvgroup", "nontrainable", "pixelshuffle")
DEVICE = Ignored(AnyOf(Text(r"cpu|cuda(:\d{1,2})?|mps", "cpu, cuda or mps"), NOTHING))
INTENSITY = Num(-1e7, 1e7)
