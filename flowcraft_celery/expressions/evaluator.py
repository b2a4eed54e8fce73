"""The safe expression evaluator for edge conditions, transforms and loop conditions (SPEC §5).

A JavaScript-like subset over JSON data, a superset of Flowcraft's property paths: it is
tokenized and parsed by hand (never Python `eval`), compiled once into closures, and can read
only keys of JSON objects, indexes of arrays and strings, and `length`. Evaluation never
raises: a missing key is `UNDEFINED`, bad arithmetic is `NaN` (value rules in
`expression_values`). Array literals hold `null` where an item is undefined and object
literals leave undefined entries out, as JSON.stringify would, so results stay JSON data
(only the result as a whole can be `UNDEFINED`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from flowcraft_celery.expressions.syntax import (
    ArrayLiteral,
    Binary,
    Conditional,
    Index,
    Literal,
    Member,
    Name,
    Node,
    ObjectLiteral,
    Unary,
    parse,
)
from flowcraft_celery.expressions.tokens import ExpressionError
from flowcraft_celery.expressions.values import (
    UNDEFINED,
    add,
    arithmetic,
    get_property,
    less_than,
    loose_equals,
    normalize_number,
    property_key,
    strict_equals,
    to_number,
    truthy,
)

__all__ = [
    "UNDEFINED",
    "Expression",
    "ExpressionError",
    "compile_expression",
    "evaluate",
    "truthy",
    "validate_expression",
]

Scope = Mapping[str, Any]
Evaluator = Callable[[Scope], Any]

_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "===": strict_equals,
    "!==": lambda a, b: not strict_equals(a, b),
    "==": loose_equals,
    "!=": lambda a, b: not loose_equals(a, b),
    "<": less_than,
    "<=": lambda a, b: less_than(a, b, or_equal=True),
    ">": lambda a, b: less_than(b, a),
    ">=": lambda a, b: less_than(b, a, or_equal=True),
}
_UNARY: dict[str, Callable[[Any], Any]] = {
    "!": lambda x: not truthy(x),
    "-": lambda x: normalize_number(-to_number(x)),
    "+": lambda x: normalize_number(to_number(x)),
}


def _read_name(name: str) -> Evaluator:
    """Read a top-level name from the scope; absent is UNDEFINED."""

    def run(scope: Scope) -> Any:
        try:
            return scope[name]
        except KeyError:
            return UNDEFINED

    return run


def _binary(node: Binary) -> Evaluator:
    """A binary operator; `&&` and `||` short-circuit and return an operand, as in JavaScript."""
    left, right = _build(node.left), _build(node.right)
    if node.op == "&&":
        return lambda scope: right(scope) if truthy(value := left(scope)) else value
    if node.op == "||":
        return lambda scope: value if truthy(value := left(scope)) else right(scope)
    if node.op == "+":
        return lambda scope: add(left(scope), right(scope))
    compare = _COMPARISONS.get(node.op)
    if compare is not None:
        return lambda scope: compare(left(scope), right(scope))
    op = node.op
    return lambda scope: arithmetic(op, left(scope), right(scope))


def _array(node: ArrayLiteral) -> Evaluator:
    """A new list per evaluation; undefined items become null."""
    items = [_build(item) for item in node.items]

    def run(scope: Scope) -> list[Any]:
        values = [item(scope) for item in items]
        return [None if value is UNDEFINED else value for value in values]

    return run


def _object(node: ObjectLiteral) -> Evaluator:
    """A new dict per evaluation; undefined entries are left out, later keys win."""
    entries = [(key, _build(value)) for key, value in node.entries]

    def run(scope: Scope) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in entries:
            evaluated = value(scope)
            if evaluated is UNDEFINED:
                result.pop(key, None)
            else:
                result[key] = evaluated
        return result

    return run


def _build(node: Node) -> Evaluator:
    """Compile an AST node into a closure over the scope."""
    if isinstance(node, Literal):
        value = node.value
        return lambda scope: value
    if isinstance(node, Name):
        return _read_name(node.name)
    if isinstance(node, Member):
        obj, key = _build(node.obj), node.key
        return lambda scope: get_property(obj(scope), key)
    if isinstance(node, Index):
        obj, computed = _build(node.obj), _build(node.key)
        return lambda scope: get_property(obj(scope), property_key(computed(scope)))
    if isinstance(node, Unary):
        operand, apply = _build(node.operand), _UNARY[node.op]
        return lambda scope: apply(operand(scope))
    if isinstance(node, Binary):
        return _binary(node)
    if isinstance(node, Conditional):
        test, then, otherwise = _build(node.test), _build(node.then), _build(node.otherwise)
        return lambda scope: then(scope) if truthy(test(scope)) else otherwise(scope)
    if isinstance(node, ArrayLiteral):
        return _array(node)
    return _object(node)


def _root_names(node: Node) -> frozenset[str]:
    """The top-level names an AST reads."""
    names: set[str] = set()
    pending: list[Node] = [node]
    while pending:
        current = pending.pop()
        if isinstance(current, Name):
            names.add(current.name)
        elif isinstance(current, Member):
            pending.append(current.obj)
        elif isinstance(current, Index):
            pending += (current.obj, current.key)
        elif isinstance(current, Unary):
            pending.append(current.operand)
        elif isinstance(current, Binary):
            pending += (current.left, current.right)
        elif isinstance(current, Conditional):
            pending += (current.test, current.then, current.otherwise)
        elif isinstance(current, ArrayLiteral):
            pending += current.items
        elif isinstance(current, ObjectLiteral):
            pending += (value for _, value in current.entries)
    return frozenset(names)


class Expression:
    """A compiled expression: immutable, shareable across threads, evaluated many times."""

    __slots__ = ("_run", "ast", "root_names", "text")

    def __init__(self, text: str, ast: Node) -> None:
        self.text = text
        self.ast = ast
        #: The top-level identifiers the expression reads (the context keys it needs).
        self.root_names: frozenset[str] = _root_names(ast)
        self._run = _build(ast)

    def evaluate(self, scope: Scope) -> Any:
        """The expression's value over `scope`; data too deeply nested to stringify is UNDEFINED."""
        try:
            return self._run(scope)
        except RecursionError:
            return UNDEFINED

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


@functools.lru_cache(maxsize=4096)
def _compile_cached(text: str) -> Expression:
    """Parse and compile once per distinct text."""
    return Expression(text, parse(text))


def compile_expression(text: str) -> Expression:
    """Parse `text` into an Expression; raises ExpressionError for anything malformed or forbidden."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be a string, not {type(text).__name__}", str(text))
    return _compile_cached(text)


def evaluate(text: str, scope: Scope) -> Any:
    """Compile (cached) and evaluate `text` over `scope`."""
    return compile_expression(text).evaluate(scope)


def validate_expression(text: str) -> None:
    """Raise ExpressionError if `text` is not a valid expression."""
    compile_expression(text)
