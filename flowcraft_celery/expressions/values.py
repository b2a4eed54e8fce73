"""JavaScript value semantics over JSON data, for the expression evaluator (SPEC §5).

Values are Python's JSON types (None is `null`; dicts and other Mappings are objects; lists
and tuples are arrays) plus `UNDEFINED`. Every function here is total: it returns a value
(`UNDEFINED`, `NaN`, `False`) and never raises on odd input. Choices that differ from
JavaScript, on purpose:
- arrays and objects are equal (`===`, `==`) only when they are the same Python object,
  so `[] === []` is false and `a === a` is true, as in JavaScript;
- numeric results that are whole and within ±2**53 come back as `int` (so `6 / 3` is `2`,
  not `2.0`) and `-0` becomes `0`;
- a key starting with `__` reads as `UNDEFINED` on every value;
- values of any other Python type are opaque objects: no key of theirs is readable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

NAN = math.nan
_SAFE_INTEGER = 2**53
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")
_STRING_NUMBER = re.compile(
    r"[+-]?(?:Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
)
_RADIX_NUMBER = re.compile(r"0(?:[xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)")
#: JavaScript's white space and line terminators (Python's `isspace` has a few more).
_JS_SPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)


class _Undefined:
    """The type of `UNDEFINED`: JavaScript's `undefined`, distinct from `None` (`null`)."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "undefined"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


#: JavaScript `undefined`: what a missing key or a failed lookup evaluates to. Falsy.
UNDEFINED: Any = _Undefined()


def is_array(value: Any) -> bool:
    """Whether `value` is a JavaScript array (list or tuple)."""
    return isinstance(value, list | tuple)


def is_number(value: Any) -> bool:
    """Whether `value` is a JavaScript number (Python bools are not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def js_type(value: Any) -> str:
    """The JavaScript type of a value: undefined, null, boolean, number, string or object."""
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"


def truthy(value: Any) -> bool:
    """JavaScript truthiness: false for undefined, null, false, 0, NaN and ""; true otherwise."""
    if value is UNDEFINED or value is None:
        return False
    if isinstance(value, bool):
        return value
    if is_number(value):
        return value == value and value != 0
    if isinstance(value, str):
        return value != ""
    return True


def as_float(value: int | float) -> float:
    """A Python number as a double, huge integers becoming ±Infinity instead of raising."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def normalize_number(value: float) -> int | float:
    """A double as the result of arithmetic: whole values within ±2**53 as int, -0 as 0."""
    if value.is_integer() and -_SAFE_INTEGER <= value <= _SAFE_INTEGER:
        return int(value)
    return value


def _string_to_number(text: str) -> float:
    """JavaScript's StringToNumber: decimal, Infinity or 0x/0o/0b text; blank is 0, else NaN."""
    text = text.strip(_JS_SPACE)
    if not text:
        return 0.0
    if _STRING_NUMBER.fullmatch(text):
        return float(text.replace("Infinity", "inf"))
    if _RADIX_NUMBER.fullmatch(text):
        return as_float(int(text[2:], {"x": 16, "o": 8, "b": 2}[text[1].lower()]))
    return NAN


def to_number(value: Any) -> float:
    """JavaScript's ToNumber, as a float: null 0, booleans 0/1, strings parsed, others NaN."""
    if is_number(value):
        return as_float(value)
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if value is None:
        return 0.0
    if isinstance(value, str):
        return _string_to_number(value)
    if is_array(value):
        return _string_to_number(to_string(value))
    return NAN


def number_to_string(value: int | float) -> str:
    """JavaScript's Number::toString: `1`, `1.5`, `1e+21`, `1e-7`, `NaN`, `Infinity`."""
    if isinstance(value, int) and -_SAFE_INTEGER <= value <= _SAFE_INTEGER:
        return str(value)
    number = as_float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(number))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    point = len(digit_tuple) + int(exponent)
    k = len(digits)
    if k <= point <= 21:
        body = digits + "0" * (point - k)
    elif 0 < point <= 21:
        body = f"{digits[:point]}.{digits[point:]}"
    elif -6 < point <= 0:
        body = "0." + "0" * -point + digits
    else:
        mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
        body = f"{mantissa}e{'+' if point - 1 >= 0 else '-'}{abs(point - 1)}"
    return sign + body


def to_string(value: Any, _seen: frozenset[int] = frozenset()) -> str:
    """JavaScript's ToString; arrays join their items with `,` (cycles read as "")."""
    if isinstance(value, str):
        return value
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if is_number(value):
        return number_to_string(value)
    if is_array(value):
        if id(value) in _seen:
            return ""
        seen = _seen | {id(value)}
        return ",".join(
            "" if item is None or item is UNDEFINED else to_string(item, seen) for item in value
        )
    return "[object Object]"


def to_primitive(value: Any) -> Any:
    """JavaScript's ToPrimitive for JSON data: arrays and objects become their string."""
    if js_type(value) == "object":
        return to_string(value)
    return value


def strict_equals(left: Any, right: Any) -> bool:
    """JavaScript `===`: same type and value; arrays and objects only when the same object."""
    kind = js_type(left)
    if kind != js_type(right):
        return False
    if kind == "number":
        return as_float(left) == as_float(right)
    if kind == "object":
        return left is right
    return bool(left == right)


def loose_equals(left: Any, right: Any) -> bool:
    """JavaScript `==`: null equals undefined only; numbers, strings and booleans coerce."""
    left_kind, right_kind = js_type(left), js_type(right)
    if left_kind == right_kind:
        return strict_equals(left, right)
    nullish = {"null", "undefined"}
    if left_kind in nullish or right_kind in nullish:
        return left_kind in nullish and right_kind in nullish
    if left_kind == "object":
        left = to_primitive(left)
    if right_kind == "object":
        right = to_primitive(right)
    if isinstance(left, str) and isinstance(right, str):
        return left == right
    return to_number(left) == to_number(right)


def _utf16(text: str) -> bytes:
    """A string's UTF-16 code units, so strings order as in JavaScript."""
    return text.encode("utf-16-be", "surrogatepass")


def less_than(left: Any, right: Any, or_equal: bool = False) -> bool:
    """JavaScript `<` (or `<=`): strings by UTF-16 code units, else as numbers (NaN: false)."""
    left, right = to_primitive(left), to_primitive(right)
    if isinstance(left, str) and isinstance(right, str):
        a, b = _utf16(left), _utf16(right)
        return a <= b if or_equal else a < b
    x, y = to_number(left), to_number(right)
    return x <= y if or_equal else x < y


def add(left: Any, right: Any) -> Any:
    """JavaScript `+`: string concatenation if either side is (or becomes) a string, else sum."""
    left, right = to_primitive(left), to_primitive(right)
    if isinstance(left, str) or isinstance(right, str):
        return to_string(left) + to_string(right)
    return normalize_number(to_number(left) + to_number(right))


def arithmetic(op: str, left: Any, right: Any) -> int | float:
    """JavaScript `-`, `*`, `/`, `%` on ToNumber of both sides; x/0 is ±Infinity or NaN."""
    x, y = to_number(left), to_number(right)
    if op == "-":
        result = x - y
    elif op == "*":
        result = x * y
    elif op == "/":
        result = _divide(x, y)
    else:
        result = NAN if math.isinf(x) or y == 0 or math.isnan(x) or math.isnan(y) else math.fmod(x, y)
    return normalize_number(result)


def _divide(x: float, y: float) -> float:
    """IEEE division as JavaScript does it: by zero gives ±Infinity (NaN for 0/0)."""
    if y == 0:
        if x == 0 or math.isnan(x):
            return NAN
        return math.copysign(math.inf, x) * math.copysign(1.0, y)
    try:
        return x / y
    except OverflowError:
        return math.copysign(math.inf, x) * math.copysign(1.0, y)


def _array_index(key: str, length: int) -> int | None:
    """The index a canonical numeric key (`0`, `12`, not `01`) names within `length`, else None."""
    if len(key) <= 10 and _ARRAY_INDEX.fullmatch(key) and int(key) < length:
        return int(key)
    return None


def property_key(value: Any) -> str:
    """The property name a computed key (`a[expr]`) stands for, as JavaScript's ToString."""
    return to_string(value)


def _string_item(text: str, key: str) -> Any:
    """`length` or the UTF-16 code unit at an index of a string, else UNDEFINED."""
    units = _utf16(text)
    if key == "length":
        return len(units) // 2
    index = _array_index(key, len(units) // 2)
    if index is None:
        return UNDEFINED
    return units[2 * index:2 * index + 2].decode("utf-16-be", "surrogatepass")


def get_property(value: Any, key: str) -> Any:
    """`value[key]` on JSON data: object keys, array/string indexes and `length`; else UNDEFINED."""
    if key.startswith("__"):
        return UNDEFINED
    if isinstance(value, Mapping):
        try:
            return value[key]
        except KeyError:
            return UNDEFINED
    if is_array(value):
        if key == "length":
            return len(value)
        index = _array_index(key, len(value))
        return UNDEFINED if index is None else value[index]
    if isinstance(value, str):
        return _string_item(value, key)
    return UNDEFINED
