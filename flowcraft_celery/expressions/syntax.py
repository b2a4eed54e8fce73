"""Parser of the expression language (SPEC §5): tokens to an AST, by precedence climbing.

Rejects at parse time what the language forbids (calls, assignment, operators it lacks,
names starting with `__`) and bounds nesting so that neither parsing nor evaluation can
exhaust Python's stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowcraft_celery.expressions.tokens import ExpressionError, Token, tokenize
from flowcraft_celery.expressions.values import UNDEFINED, normalize_number, number_to_string

#: Deepest accepted nesting of sub-expressions (parentheses, operands, literals).
MAX_DEPTH = 100

#: Binary operators and their precedence (higher binds tighter), as in JavaScript.
BINARY_PRECEDENCE: dict[str, int] = {
    "||": 1, "&&": 2,
    "==": 3, "!=": 3, "===": 3, "!==": 3,
    "<": 4, "<=": 4, ">": 4, ">=": 4,
    "+": 5, "-": 5,
    "*": 6, "/": 6, "%": 6,
}
UNARY_OPERATORS = frozenset({"!", "-", "+"})
_KEYWORDS: dict[str, Any] = {"true": True, "false": False, "null": None, "undefined": UNDEFINED}
_ASSIGNMENTS = frozenset({
    "=", "+=", "-=", "*=", "/=", "%=", "**=", "<<=", ">>=", ">>>=", "&=", "|=", "^=",
    "&&=", "||=", "??=",
})
_OPERATOR_WORDS = frozenset({"typeof", "instanceof", "in", "new", "delete", "void", "await"})
_CLOSERS = frozenset({")", "]", "}", ",", ":", "?"})
_PLAIN_PUNCTUATION = frozenset({"[", "]", "{", "}", ".", ";"})


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant: number, string, true, false, null or undefined."""

    value: Any
    pos: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Name:
    """A top-level identifier, read from the scope."""

    name: str
    pos: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Member:
    """`obj.key` with a fixed key."""

    obj: Node
    key: str
    pos: int
    depth: int


@dataclass(frozen=True, slots=True)
class Index:
    """`obj[key]` with a computed key."""

    obj: Node
    key: Node
    pos: int
    depth: int


@dataclass(frozen=True, slots=True)
class Unary:
    """`!x`, `-x` or `+x`."""

    op: str
    operand: Node
    pos: int
    depth: int


@dataclass(frozen=True, slots=True)
class Binary:
    """`left op right`, including the short-circuit `&&` and `||`."""

    op: str
    left: Node
    right: Node
    pos: int
    depth: int


@dataclass(frozen=True, slots=True)
class Conditional:
    """`test ? then : otherwise`."""

    test: Node
    then: Node
    otherwise: Node
    pos: int
    depth: int


@dataclass(frozen=True, slots=True)
class ArrayLiteral:
    """`[a, b, ...]`."""

    items: tuple[Node, ...]
    pos: int
    depth: int


@dataclass(frozen=True, slots=True)
class ObjectLiteral:
    """`{key: value, ...}`; a repeated key keeps its last value."""

    entries: tuple[tuple[str, Node], ...]
    pos: int
    depth: int


Node = Literal | Name | Member | Index | Unary | Binary | Conditional | ArrayLiteral | ObjectLiteral


class _Parser:
    """Precedence-climbing parser over one token list."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.nesting = 0

    def error(self, problem: str, pos: int) -> ExpressionError:
        """An ExpressionError at `pos` of this expression."""
        return ExpressionError(problem, self.text, pos)

    def peek(self) -> Token:
        """The current token."""
        return self.tokens[self.index]

    def advance(self) -> Token:
        """Consume and return the current token."""
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def at(self, punct: str) -> bool:
        """Whether the current token is the punctuator `punct`."""
        token = self.peek()
        return token.kind == "punct" and token.text == punct

    def expect(self, punct: str) -> Token:
        """Consume the punctuator `punct` or raise naming what was found instead."""
        token = self.peek()
        if token.kind == "punct" and token.text == punct:
            return self.advance()
        found = "end of expression" if token.kind == "end" else repr(token.text)
        raise self.error(f"expected {punct!r} but found {found}", token.pos)

    def unexpected(self, token: Token) -> ExpressionError:
        """The error for a token that cannot appear where it is."""
        if token.kind == "end":
            return self.error("unexpected end of expression", token.pos)
        if token.kind == "punct" and token.text in _ASSIGNMENTS:
            return self.error(f"assignment is not allowed ({token.text!r})", token.pos)
        if token.kind == "punct" and token.text == "(":
            return self.error("function calls are not allowed", token.pos)
        if (token.kind == "punct" and token.text not in BINARY_PRECEDENCE
                and token.text not in _CLOSERS and token.text not in _PLAIN_PUNCTUATION):
            return self.error(f"unsupported operator {token.text!r}", token.pos)
        if token.kind == "name" and token.text in _OPERATOR_WORDS:
            return self.error(f"unsupported operator {token.text!r}", token.pos)
        return self.error(f"unexpected token {token.text!r}", token.pos)

    def nested(self, depth: int, pos: int) -> int:
        """Check a node's depth against MAX_DEPTH; returns it."""
        if depth > MAX_DEPTH:
            raise self.error(f"expression nests deeper than {MAX_DEPTH} levels", pos)
        return depth

    def enter(self, pos: int) -> None:
        """Descend one level of parser recursion, refusing to go past MAX_DEPTH."""
        self.nesting += 1
        self.nested(self.nesting, pos)

    def parse(self) -> Node:
        """The whole token list as one expression; Python's stack limit is a nesting error too."""
        try:
            node = self.expression()
        except RecursionError:
            raise self.error("expression nests too deeply", self.peek().pos) from None
        token = self.peek()
        if token.kind != "end":
            raise self.unexpected(token)
        return node

    def expression(self) -> Node:
        """A conditional expression (the lowest precedence)."""
        self.enter(self.peek().pos)
        test = self.binary(0)
        if self.at("?"):
            question = self.advance()
            then = self.expression()
            self.expect(":")
            otherwise = self.expression()
            depth = self.nested(1 + max(test.depth, then.depth, otherwise.depth), question.pos)
            test = Conditional(test, then, otherwise, question.pos, depth)
        self.nesting -= 1
        return test

    def binary(self, min_precedence: int) -> Node:
        """Binary operators binding tighter than `min_precedence`, left-associative."""
        left = self.unary()
        while True:
            token = self.peek()
            precedence = BINARY_PRECEDENCE.get(token.text, 0) if token.kind == "punct" else 0
            if precedence == 0:
                if token.kind == "end" or (token.kind == "punct" and token.text in _CLOSERS):
                    return left
                raise self.unexpected(token)
            if precedence <= min_precedence:
                return left
            self.advance()
            right = self.binary(precedence)
            depth = self.nested(1 + max(left.depth, right.depth), token.pos)
            left = Binary(token.text, left, right, token.pos, depth)

    def unary(self) -> Node:
        """A prefix operator applied to an operand, or a postfix expression."""
        token = self.peek()
        if token.kind == "punct" and token.text in UNARY_OPERATORS:
            self.advance()
            self.enter(token.pos)
            operand = self.unary()
            self.nesting -= 1
            return Unary(token.text, operand, token.pos, self.nested(1 + operand.depth, token.pos))
        if token.kind == "name" and token.text in _OPERATOR_WORDS:
            following = self.tokens[self.index + 1]
            if following.kind != "end" and not (following.kind == "punct" and following.text in
                                                 BINARY_PRECEDENCE.keys() | _CLOSERS | {".", "["}):
                raise self.unexpected(token)
        return self.postfix()

    def postfix(self) -> Node:
        """A primary followed by any number of `.name` and `[expr]` accesses."""
        node = self.primary()
        while True:
            token = self.peek()
            if token.kind != "punct":
                return node
            if token.text == ".":
                self.advance()
                name = self.peek()
                if name.kind != "prop":
                    raise self.error("expected a property name after '.'", name.pos)
                self.advance()
                self.check_name(name.text, name.pos)
                depth = self.nested(1 + node.depth, token.pos)
                node = Member(node, name.text, token.pos, depth)
            elif token.text == "[":
                self.advance()
                key = self.expression()
                self.expect("]")
                depth = self.nested(1 + max(node.depth, key.depth), token.pos)
                node = Index(node, key, token.pos, depth)
            elif token.text == "(":
                raise self.unexpected(token)
            else:
                return node

    def check_name(self, name: str, pos: int) -> None:
        """Refuse identifiers and property names starting with `__` (reserved)."""
        if name.startswith("__"):
            raise self.error(f"name {name!r} is reserved (starts with '__')", pos)

    def primary(self) -> Node:
        """A literal, a name, a parenthesised expression, or an array or object literal."""
        token = self.advance()
        if token.kind == "num":
            return Literal(normalize_number(token.value), token.pos)
        if token.kind == "str":
            return Literal(token.value, token.pos)
        if token.kind == "name":
            if token.text in _KEYWORDS:
                return Literal(_KEYWORDS[token.text], token.pos)
            self.check_name(token.text, token.pos)
            return Name(token.text, token.pos)
        if token.kind == "punct" and token.text == "(":
            node = self.expression()
            self.expect(")")
            return node
        if token.kind == "punct" and token.text == "[":
            return self.array(token)
        if token.kind == "punct" and token.text == "{":
            return self.object(token)
        raise self.unexpected(token)

    def array(self, opening: Token) -> ArrayLiteral:
        """The items of an array literal after its `[` (a trailing comma is allowed)."""
        items: list[Node] = []
        while not self.at("]"):
            items.append(self.expression())
            if not self.at("]"):
                self.expect(",")
        self.advance()
        depth = self.nested(1 + max((item.depth for item in items), default=0), opening.pos)
        return ArrayLiteral(tuple(items), opening.pos, depth)

    def object(self, opening: Token) -> ObjectLiteral:
        """The entries of an object literal after its `{`: identifier, string or number keys."""
        entries: list[tuple[str, Node]] = []
        while not self.at("}"):
            key = self.advance()
            if key.kind == "name":
                name = key.text
            elif key.kind == "str":
                name = key.value
            elif key.kind == "num":
                name = number_to_string(normalize_number(key.value))
            else:
                raise self.unexpected(key)
            self.check_name(name, key.pos)
            self.expect(":")
            entries.append((name, self.expression()))
            if not self.at("}"):
                self.expect(",")
        self.advance()
        depth = self.nested(1 + max((value.depth for _, value in entries), default=0), opening.pos)
        return ObjectLiteral(tuple(entries), opening.pos, depth)


def parse(text: str) -> Node:
    """The AST of `text`; raises ExpressionError naming the problem and its position."""
    return _Parser(text).parse()
