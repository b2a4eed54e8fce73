"""The expression language of SPEC §5: values, operators, access rules, errors and root names."""

from __future__ import annotations

import math
import pickle
from typing import Any

import pytest

from flowcraft_celery.expressions.evaluator import (
    UNDEFINED,
    ExpressionError,
    compile_expression,
    evaluate,
    truthy,
    validate_expression,
)

SCOPE: dict[str, Any] = {
    "a": {"b": {"c": 3}, "x-y": "dash", "list": [10, 20, 30], "keys": "k", "0": "zero"},
    "n": None,
    "t": True,
    "f": False,
    "zero": 0,
    "s": "héllo",
    "emoji": "😀x",
    "items": [1, "two", None, {"k": "v"}],
    "empty": [],
    "obj": {},
    "num": 2.5,
    "big": 10**30,
    "result": {"output": {"ok": True, "score": 0.75}, "action": "approve"},
    "check_sentiment": True,
    "$dollar": 1,
    "_under": 2,
}


def ev(text: str, scope: dict[str, Any] | None = None) -> Any:
    """Evaluate over SCOPE unless another scope is given."""
    return evaluate(text, SCOPE if scope is None else scope)


def same(actual: Any, expected: Any) -> bool:
    """Equality that tells bools from numbers, ints from floats not, and NaN equals NaN."""
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(actual, float) and math.isnan(actual)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if expected is UNDEFINED or actual is UNDEFINED:
        return expected is actual
    return type(expected) is type(actual) and expected == actual


LITERALS = [
    ("42", 42), ("4.5", 4.5), (".5", 0.5), ("5.", 5), ("1e3", 1000), ("2.5E-1", 0.25),
    ("0x1F", 31), ("0o17", 15), ("0b101", 5), ("1e400", math.inf),
    ("'single'", "single"), ('"double"', "double"), (r"'it\'s'", "it's"),
    (r'"a\nb\tc"', "a\nb\tc"), (r'"\x41\u0042\u{43}"', "ABC"), (r'"\\"', "\\"),
    (r'"\uD83D\uDE00"', "😀"), ('"say \\"hi\\""', 'say "hi"'),
    ("true", True), ("false", False), ("null", None), ("undefined", UNDEFINED),
    ("[]", []), ("[1, 'a', null,]", [1, "a", None]), ("[[1], [2, [3]]]", [[1], [2, [3]]]),
    ("{}", {}), ("{a: 1, 'b-c': 2, 3: 'x'}", {"a": 1, "b-c": 2, "3": "x"}),
    ("{a: 1, a: 2}", {"a": 2}), ("{true: 1, null: 2}", {"true": 1, "null": 2}),
    ("[undefined, missing]", [None, None]), ("{a: undefined, b: 1}", {"b": 1}),
]

ACCESS = [
    ("a.b.c", 3), ("result.output.ok", True), ("check_sentiment", True),
    ("result.action", "approve"), ("a['x-y']", "dash"), ('a["b"]["c"]', 3),
    ("a.list[1]", 20), ("a.list[1.0]", 20), ("a.list['2']", 30), ("a.list.0", 10),
    ("a.list[3]", UNDEFINED), ("a.list[-1]", UNDEFINED), ("a.list['01']", UNDEFINED),
    ("a.list[1 + 1]", 30), ("a[0]", "zero"), ("a.list.length", 3), ("s.length", 5),
    ("emoji.length", 3), ("s[1]", "é"), ("s[9]", UNDEFINED), ("empty.length", 0),
    ("obj.length", UNDEFINED), ("missing", UNDEFINED), ("missing.deeper.still", UNDEFINED),
    ("n.x", UNDEFINED), ("a.b.c.d", UNDEFINED), ("num.length", UNDEFINED),
    ("t.x", UNDEFINED), ("$dollar", 1), ("_under", 2), ("items[3].k", "v"),
    ("a[a.keys]", UNDEFINED), ("{x: 1}.x", 1), ("[5, 6][1]", 6), ("'abc'.length", 3),
    ("(a).b.c", 3), ("a . b . c", 3),
]

NO_PYTHON_INTERNALS = [
    "a.items", "a.get", "a.values", "a['__class__']", "a['__dict__']", "s.upper",
    "s['__len__']", "items.append", "a.constructor", "a.prototype", "a['__proto__']",
    "empty.pop", "num.real", "t.numerator", "a[['__class__']]",
]

ARITHMETIC = [
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("10 - 4 - 3", 3), ("2 * 3 % 4", 2),
    ("7 / 2", 3.5), ("6 / 3", 2), ("1 / 0", math.inf), ("-1 / 0", -math.inf),
    ("0 / 0", math.nan), ("5 % 3", 2), ("-5 % 3", -2), ("5.5 % 2", 1.5), ("5 % 0", math.nan),
    ("-num", -2.5), ("+'3'", 3), ("-'x'", math.nan), ("+''", 0), ("+' 12 '", 12),
    ("+true", 1), ("+null", 0), ("+undefined", math.nan), ("+[]", 0), ("+[7]", 7),
    ("+[1, 2]", math.nan), ("+{}", math.nan), ("'6' * '7'", 42), ("'a' * 2", math.nan),
    ("null + 1", 1), ("undefined + 1", math.nan), ("true + true", 2), ("missing * 2", math.nan),
    ("0.1 + 0.2", 0.30000000000000004), ("'0x10' * 1", 16), ("'1e3' - 0", 1000),
    ("'Infinity' * 1", math.inf), ("'inf' * 1", math.nan), ("'1_000' * 1", math.nan),
    ("- - 2", 2), ("2 - -2", 4), ("big + 0", 1e30), (r"+'\u001c'", math.nan), (r"+'\u00a0 7\n'", 7),
]

CONCATENATION = [
    ("'a' + 1", "a1"), ("1 + 'a'", "1a"), ("'n' + 1.0", "n1"), ("'n' + 1.5", "n1.5"),
    ("'' + true", "true"), ("'' + null", "null"), ("'' + undefined", "undefined"),
    ("'' + [1, [2, 3]]", "1,2,3"), ("'' + [null, undefined, 1]", ",,1"), ("'' + {}", "[object Object]"),
    ("[1] + 1", "11"), ("[] + []", ""), ("'' + 1e21", "1e+21"), ("'' + 1e20", "100000000000000000000"),
    ("'' + 1e-7", "1e-7"), ("'' + 0.000001", "0.000001"), ("'' + 1/0", "Infinity"),
    ("'' + 0/0", "NaN"), ("'' + -1.5e-10", "-1.5e-10"), ("'' + 123.456", "123.456"),
    ("1 + 2 + 'x'", "3x"), ("'x' + 1 + 2", "x12"), ("'' + big", "1e+30"),
]

EQUALITY = [
    ("1 === 1", True), ("1 === 1.0", True), ("true === 1", False), ("1 === true", False),
    ("t === true", True), ("zero === false", False), ("'1' === 1", False), ("null === null", True),
    ("null === undefined", False), ("undefined === missing", True), ("0/0 === 0/0", False),
    ("'a' === 'a'", True), ("a === a", True), ("[] === []", False), ("{} === {}", False),
    ("items === items", True), ("1 !== 2", True), ("true !== 1", True),
    ("null == undefined", True), ("null == missing", True), ("null == 0", False),
    ("null == false", False), ("undefined == ''", False), ("1 == '1'", True), ("0 == ''", True),
    ("1 == true", True), ("2 == true", False), ("'1' == true", True), ("0 == false", True),
    ("[1] == 1", True), ("[1, 2] == '1,2'", True), ("0/0 == 0/0", False), ("1 != '1'", False),
    ("null != 0", True), ("{} == '[object Object]'", True),
]

COMPARISON = [
    ("1 < 2", True), ("2 < 1", False), ("2 <= 2", True), ("3 > 2", True), ("2 >= 3", False),
    ("'b' > 'a'", True), ("'abc' < 'abd'", True), ("'B' < 'a'", True), ("'10' < '9'", True),
    ("'10' < 9", False), ("10 > '9'", True), ("null < 1", True), ("null >= 0", True),
    ("undefined < 1", False), ("undefined >= 1", False), ("0/0 <= 0/0", False),
    ("'a' < 1", False), ("'a' >= 1", False), ("true > false", True), ("[2] > 1", True),
    ("'\uffff' < '😀'", False), ("result.output.score >= 0.5", True),
]

LOGIC = [
    ("t && 'yes'", "yes"), ("f && 'yes'", False), ("n && 'yes'", None), ("0 || 'fallback'", "fallback"),
    ("'' || n", None), ("'x' || missing.y", "x"), ("missing || 'd'", "d"), ("!t", False),
    ("!n", True), ("!missing", True), ("!(0/0)", True), ("!0/0", math.inf), ("![]", False),
    ("!{}", False), ("!!'0'", True),
    ("t ? 1 : 2", 1), ("f ? 1 : 2", 2), ("n ? 1 : zero ? 2 : 3", 3), ("t ? f ? 1 : 2 : 3", 2),
    ("1 || 2 && 0", 1), ("(1 || 2) && 0", 0), ("1 + 1 === 2 && 'ok'", "ok"),
    ("empty ? 'truthy' : 'falsy'", "truthy"), ("obj ? 'truthy' : 'falsy'", "truthy"),
    ("1 < 2 === true", True), ("!1 == 0", True), ("-2 * -3", 6), ("2 * 3 > 5 ? 'big' : 'small'", "big"),
]

TABLES = {
    "literal": LITERALS, "access": ACCESS, "arithmetic": ARITHMETIC,
    "concatenation": CONCATENATION, "equality": EQUALITY, "comparison": COMPARISON, "logic": LOGIC,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [pytest.param(text, expected, id=f"{table}:{text}")
     for table, rows in TABLES.items() for text, expected in rows],
)
def test_evaluates_like_javascript(text: str, expected: Any) -> None:
    actual = ev(text)
    assert same(actual, expected), f"{text!r} gave {actual!r}, expected {expected!r}"


@pytest.mark.parametrize("text", NO_PYTHON_INTERNALS)
def test_python_attributes_are_unreachable(text: str) -> None:
    assert ev(text) is UNDEFINED


def test_keys_named_like_dict_methods_are_plain_keys() -> None:
    assert ev("a.keys") == "k"
    assert ev("d.items.length", {"d": {"items": [1, 2]}}) == 2


def test_computed_key_starting_with_dunder_reads_undefined_even_when_present() -> None:
    assert ev("d['__x']", {"d": {"__x": 1}}) is UNDEFINED
    assert ev("d[k]", {"d": {"__x": 1}, "k": "__x"}) is UNDEFINED


def test_objects_built_by_a_literal_are_fresh_each_evaluation() -> None:
    expression = compile_expression("[input, {v: input}]")
    first = expression.evaluate({"input": 1})
    first[1]["v"] = 99
    assert expression.evaluate({"input": 1}) == [1, {"v": 1}]


def test_transform_scope_reads_input_and_context() -> None:
    scope = {"input": {"total": 40}, "context": {"tax": 2}}
    assert evaluate("{sum: input.total + context.tax, label: 'n=' + input.total}", scope) == {
        "sum": 42, "label": "n=40",
    }


def test_scope_may_be_any_mapping() -> None:
    class Lazy(dict[str, Any]):
        def __missing__(self, key: str) -> Any:
            raise KeyError(key)

    assert evaluate("x.y + 1", Lazy(x={"y": 1})) == 2
    assert evaluate("nope", Lazy()) is UNDEFINED


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (UNDEFINED, False), (None, False), (False, False), (0, False), (0.0, False), (-0.0, False),
        (math.nan, False), ("", False), (True, True), (1, True), (-1.5, True), ("0", True),
        ("false", True), ([], True), ({}, True), (math.inf, True),
    ],
)
def test_truthy_follows_javascript(value: Any, expected: bool) -> None:
    assert truthy(value) is expected


def test_undefined_is_a_falsy_singleton_distinct_from_null() -> None:
    assert UNDEFINED is not None
    assert not UNDEFINED
    assert repr(UNDEFINED) == "undefined"
    assert pickle.loads(pickle.dumps(UNDEFINED)) is UNDEFINED
    assert ev("undefined === null") is False


ERRORS = [
    ("a.b + )", "unexpected token ')'", 6),
    ("a()", "function calls are not allowed", 1),
    ("a.b(1)", "function calls are not allowed", 3),
    ("a = 1", "assignment is not allowed", 2),
    ("a += 1", "assignment is not allowed", 2),
    ("a ** 2", "unsupported operator '**'", 2),
    ("a ?? b", "unsupported operator '??'", 2),
    ("a?.b", "unsupported operator '?.'", 1),
    ("a & b", "unsupported operator '&'", 2),
    ("x++", "unsupported operator '++'", 1),
    ("~x", "unsupported operator '~'", 0),
    ("typeof a", "unsupported operator 'typeof'", 0),
    ("a in b", "unsupported operator 'in'", 2),
    ("new Date", "unsupported operator 'new'", 0),
    ("__proto__", "reserved", 0),
    ("a.__class__", "reserved", 2),
    ("a.b.__dict__.x", "reserved", 4),
    ("{__x: 1}", "reserved", 1),
    ("{'__x': 1}", "reserved", 1),
    ("(a", "expected ')' but found end of expression", 2),
    ("[1, 2", "expected ',' but found end of expression", 5),
    ("{a 1}", "expected ':' but found '1'", 3),
    ("a ? b", "expected ':' but found end of expression", 5),
    ("", "unexpected end of expression", 0),
    ("   ", "unexpected end of expression", 3),
    ("a b", "unexpected token 'b'", 2),
    ("a.", "expected a property name after '.'", 2),
    ("a.+b", "expected a property name after '.'", 2),
    ("[1,,2]", "unexpected token ','", 3),
    ("'abc", "unterminated string", 0),
    ("'ab\ncd'", "unterminated string", 0),
    ("1abc", "malformed number", 0),
    ("0x", "malformed number", 0),
    ("a # b", "unexpected character '#'", 2),
    ("`tpl`", "unexpected character '`'", 0),
    (r"'\x4'", "malformed escape sequence", 1),
    (r"'\u{110000}'", "escape sequence out of range", 1),
    (r"'\07'", "octal escapes are not allowed", 1),
    ("a; b", "unexpected token ';'", 1),
    ("a, b", "unexpected token ','", 1),
]


@pytest.mark.parametrize(("text", "problem", "position"), ERRORS, ids=[e[0] for e in ERRORS])
def test_syntax_errors_name_problem_and_position(text: str, problem: str, position: int) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text)
    error = caught.value
    assert problem in str(error)
    assert error.position == position
    assert error.expression == text
    assert f"at column {position + 1}" in str(error)
    assert isinstance(error, ValueError)


def test_error_message_quotes_the_expression() -> None:
    with pytest.raises(ExpressionError, match=r"""^unexpected token '\)' at column 7 in "a.b \+ \)"$"""):
        validate_expression("a.b + )")


def test_validate_accepts_a_valid_expression() -> None:
    validate_expression("result.output.ok === true && context.n > 2")
    validate_expression("check_sentiment")


def test_non_string_expression_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError, match="must be a string, not int"):
        compile_expression(5)  # type: ignore[arg-type]
    with pytest.raises(ExpressionError, match="must be a string, not list"):
        validate_expression(["a"])  # type: ignore[arg-type]


def test_length_limit() -> None:
    long_text = "a" * 10_001
    with pytest.raises(ExpressionError, match="10001 characters long, over the limit of 10000") as caught:
        compile_expression(long_text)
    assert caught.value.position is None
    assert len(str(caught.value)) < 400
    assert compile_expression("a" * 10_000).evaluate({"a" * 10_000: 1}) == 1


@pytest.mark.parametrize(
    "text",
    [
        "(" * 101 + "a" + ")" * 101,
        "[" * 101 + "]" * 101,
        "!" * 101 + "a",
        "- " * 101 + "1",
        "+".join(["a"] * 101),
        "a" + ".b" * 101,
        "a" + "[0]" * 101,
        "{a: " * 101 + "1" + "}" * 101,
        "t ? " * 101 + "1" + " : 2" * 101,
        "(a || b && c == d < e + f * " * 99 + "g" + ")" * 99,
        "(" * 4999 + "a" + ")" * 4999,
    ],
    ids=["parens", "arrays", "nots", "negations", "sum", "members", "indexes", "objects",
         "ternaries", "precedence-chains", "deep-parens"],
)
def test_nesting_limit_is_an_error_not_a_crash(text: str) -> None:
    with pytest.raises(ExpressionError, match="nests"):
        compile_expression(text)


def test_nesting_up_to_the_limit_evaluates() -> None:
    assert compile_expression("(" * 99 + "1" + ")" * 99).evaluate({}) == 1
    assert compile_expression("+".join(["1"] * 100)).evaluate({}) == 100
    assert compile_expression("!" * 99 + "0").evaluate({}) is True


def test_deeply_nested_data_does_not_raise() -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    assert evaluate("x + ''", {"x": deep}) in ("", UNDEFINED)
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    assert evaluate("x + ''", {"x": cyclic}) == "1,"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("result.output.ok", {"result"}),
        ("check_sentiment", {"check_sentiment"}),
        ("a.b + c[d.e] ? f : {g: h, i: [j]}", {"a", "c", "d", "f", "h", "j"}),
        ("x.y.z === 'w'", {"x"}),
        ("true && null || undefined", set()),
        ("a['b'].c", {"a"}),
        ("-m * !n", {"m", "n"}),
    ],
)
def test_root_names_are_the_top_level_identifiers(text: str, names: set[str]) -> None:
    assert compile_expression(text).root_names == frozenset(names)


def test_compiled_expressions_are_cached() -> None:
    assert compile_expression("a.b === 1") is compile_expression("a.b === 1")
