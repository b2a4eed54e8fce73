"""Properties of the expression evaluator: compile raises only ExpressionError, evaluate never raises."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowcraft_celery.expressions.evaluator import UNDEFINED, ExpressionError, compile_expression, truthy

NAMES = ["a", "b", "result", "input", "$x", "_y"]
PROPERTIES = ["a", "b", "length", "0", "1", "keys", "constructor", "output", "x-y"]
BINARY = ["===", "!==", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "+", "-", "*", "/", "%"]
TOKENS = [
    *BINARY, "!", "?", ":", ".", ",", "(", ")", "[", "]", "{", "}", "=", "=>", "**", "??", "?.",
    "++", "&", "|", ";", "`", "#", "\\", "'", '"', "typeof", "in", "new", "__proto__", "__class__",
    "true", "false", "null", "undefined", "a", "b", "length", "0", "1.5", ".5", "1e", "0x1F",
    "1e400", "'s'", '"t"', "'\\u{1F600}'", "'\\x4'", "\n", " ",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(PROPERTIES) | st.text(max_size=4), inner, max_size=4
    ),
    max_leaves=6,
)
scopes = st.dictionaries(st.sampled_from(NAMES), json_values, max_size=3)


def _number_literal(value: float) -> str:
    """A JavaScript numeric literal for a finite float (no sign: unary minus is an operator)."""
    return repr(abs(value))


leaves = (
    st.floats(allow_nan=False, allow_infinity=False).map(_number_literal)
    | st.integers(0, 2**70).map(str)
    | st.text(max_size=6).map(json.dumps)
    | st.sampled_from(["true", "false", "null", "undefined", *NAMES])
)


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Compound expressions over smaller ones, parenthesised so any precedence is fine."""
    return st.one_of(
        st.tuples(inner, st.sampled_from(BINARY), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(["!", "-", "+"]), inner).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(inner, st.sampled_from(PROPERTIES[:-1])).map(lambda t: f"({t[0]}).{t[1]}"),
        st.tuples(inner, inner).map(lambda t: f"({t[0]})[{t[1]}]"),
        st.tuples(inner, inner, inner).map(lambda t: f"({t[0]}) ? ({t[1]}) : ({t[2]})"),
        st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
        st.lists(st.tuples(st.sampled_from(PROPERTIES).map(json.dumps), inner), max_size=3).map(
            lambda pairs: "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
        ),
    )


valid_expressions = st.recursive(leaves, _extend, max_leaves=16)
token_soups = st.lists(
    st.tuples(st.sampled_from(TOKENS), st.sampled_from(["", " "])), max_size=25
).map(lambda pairs: "".join(token + gap for token, gap in pairs))

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def is_value(value: Any) -> bool:
    """Whether `value` is JSON data (numbers may be NaN/±Infinity) or UNDEFINED at the top."""
    if value is UNDEFINED or value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list):
        return all(item is not UNDEFINED and is_value(item) for item in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and v is not UNDEFINED and is_value(v) for k, v in value.items())
    return False


def _compile_or_none(text: str) -> Any:
    """The compiled expression, or None when it is rejected with an ExpressionError."""
    try:
        return compile_expression(text)
    except ExpressionError as error:
        assert error.expression == text
        assert error.position is None or 0 <= error.position <= len(text)
        return None


@FAST
@given(st.text(max_size=60), scopes)
def test_random_text_compiles_or_raises_expression_error(text: str, scope: dict[str, Any]) -> None:
    compiled = _compile_or_none(text)
    if compiled is not None:
        assert is_value(compiled.evaluate(scope))


@FAST
@given(token_soups, scopes)
def test_token_soup_compiles_or_raises_expression_error(text: str, scope: dict[str, Any]) -> None:
    compiled = _compile_or_none(text)
    if compiled is not None:
        assert is_value(compiled.evaluate(scope))


@FAST
@given(valid_expressions, scopes)
def test_valid_expressions_evaluate_without_raising(text: str, scope: dict[str, Any]) -> None:
    compiled = compile_expression(text)
    value = compiled.evaluate(scope)
    assert is_value(value)
    assert compiled.root_names <= set(NAMES)
    assert compile_expression(f"!!({text})").evaluate(scope) is truthy(value)
    assert compile_expression(f"({text}) ? 1 : 2").evaluate(scope) == (1 if truthy(value) else 2)
    assert isinstance(compile_expression(f"'' + ({text})").evaluate(scope), str)
    number = compile_expression(f"+({text})").evaluate(scope)
    assert isinstance(number, int | float) and not isinstance(number, bool)
    if isinstance(number, float) and not math.isnan(number) and not math.isinf(number):
        assert not number.is_integer() or abs(number) > 2**53


@settings(FAST, max_examples=100)
@given(json_values, st.sampled_from(PROPERTIES))
def test_property_paths_read_the_data(value: Any, key: str) -> None:
    scope = {"a": {key: value}}
    assert compile_expression(f"a[{json.dumps(key)}]").evaluate(scope) is value
    if key.isidentifier():
        assert compile_expression(f"a.{key}").evaluate(scope) is value
