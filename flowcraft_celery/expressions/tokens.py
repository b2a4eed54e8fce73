"""Tokenizer of the expression language (SPEC §5): source text to a list of positioned tokens.

Hand-written and linear; it never evaluates anything. Operators the language does not support
are still recognised as whole tokens, so the parser can name them in its error message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from flowcraft_celery.errors import FlowcraftError

#: Longest accepted expression, in characters.
MAX_LENGTH = 10_000

TokenKind = Literal["num", "str", "name", "prop", "punct", "end"]

#: Every JavaScript punctuator we recognise, longest first so that matching is greedy.
_PUNCTUATORS: tuple[str, ...] = tuple(sorted(
    {
        ">>>=", "===", "!==", "**=", "...", "<<=", ">>=", ">>>", "&&=", "||=", "??=",
        "==", "!=", "<=", ">=", "&&", "||", "??", "?.", "=>", "**", "++", "--",
        "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "<<", ">>",
        "+", "-", "*", "/", "%", "<", ">", "!", "?", ":", ".", ",", "(", ")", "[", "]",
        "{", "}", "=", "&", "|", "^", "~", ";",
    },
    key=len,
    reverse=True,
))

_NUMBER = re.compile(
    r"0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+"
    r"|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
)
_PROPERTY = re.compile(r"[A-Za-z0-9_$]+")
_SIMPLE_ESCAPES = {
    "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0",
}
_LINE_BREAKS = "\n\r\u2028\u2029"
#: Tokens after which a `.` is member access rather than the start of a number like `.5`.
_ENDS_OPERAND = frozenset({")", "]", "}"})


class ExpressionError(FlowcraftError, ValueError):
    """A malformed or forbidden expression; names the problem, the 0-based `position` and the text."""

    def __init__(self, problem: str, expression: str, position: int | None = None) -> None:
        where = "" if position is None else f" at column {position + 1}"
        super().__init__(f"{problem}{where} in {_excerpt(expression, position)}")
        self.problem = problem
        self.expression = expression
        self.position = position


def _excerpt(text: str, position: int | None, width: int = 80) -> str:
    """The expression quoted for a message, cut to a window around `position` when long."""
    if len(text) <= 2 * width:
        return f'"{text}"'
    center = position or 0
    start = max(0, center - width)
    end = min(len(text), center + width)
    head = "…" if start > 0 else ""
    tail = "…" if end < len(text) else ""
    return f'"{head}{text[start:end]}{tail}"'


@dataclass(frozen=True, slots=True)
class Token:
    """One token: its kind, source text, decoded value (numbers, strings) and 0-based position."""

    kind: TokenKind
    text: str
    pos: int
    value: Any = None


def _is_digit(ch: str) -> bool:
    """Whether `ch` is one ASCII digit (Unicode digits are not numbers here, as in JavaScript)."""
    return len(ch) == 1 and ch in "0123456789"


def _is_name_start(ch: str) -> bool:
    """Whether `ch` may start an identifier (letters, `_`, `$`)."""
    return ch.isalpha() or ch in "_$"


def _is_name_part(ch: str) -> bool:
    """Whether `ch` may continue an identifier (letters, digits, `_`, `$`)."""
    return ch.isalnum() or ch in "_$"


def _number_value(text: str) -> float:
    """The value of a numeric literal (JavaScript numbers are doubles)."""
    prefix = text[:2].lower()
    if prefix in ("0x", "0o", "0b"):
        return float(int(text[2:], {"0x": 16, "0o": 8, "0b": 2}[prefix]))
    return float(text)


def _combine_surrogates(text: str) -> str:
    """Join UTF-16 surrogate pairs written as two `\\u` escapes into one character."""
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


class _Scanner:
    """Walks the source once, producing tokens or raising ExpressionError."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.tokens: list[Token] = []

    def error(self, problem: str, pos: int) -> ExpressionError:
        """An ExpressionError at `pos` of this source."""
        return ExpressionError(problem, self.text, pos)

    def run(self) -> list[Token]:
        """Tokenize the whole source; the list ends with an `end` token."""
        text = self.text
        while True:
            while self.i < len(text) and text[self.i].isspace():
                self.i += 1
            if self.i >= len(text):
                self.tokens.append(Token("end", "", len(text)))
                return self.tokens
            self.tokens.append(self.next_token())

    def member_dot_before(self) -> bool:
        """Whether the previous token ends an operand, so a `.` here is member access."""
        if not self.tokens:
            return False
        prev = self.tokens[-1]
        return prev.kind in ("name", "prop", "str", "num") or prev.text in _ENDS_OPERAND

    def next_token(self) -> Token:
        """Scan one token starting at the current (non-space) character."""
        text, start = self.text, self.i
        ch = text[start]
        if self.tokens and self.tokens[-1].text == "." and self.tokens[-1].kind == "punct":
            match = _PROPERTY.match(text, start)
            if match:
                self.i = match.end()
                return Token("prop", match.group(), start)
        if ch in "'\"":
            return self.string(ch)
        if _is_digit(ch) or (ch == "." and _is_digit(text[start + 1:start + 2])
                            and not self.member_dot_before()):
            return self.number()
        if _is_name_start(ch):
            end = start + 1
            while end < len(text) and _is_name_part(text[end]):
                end += 1
            self.i = end
            return Token("name", text[start:end], start)
        for punct in _PUNCTUATORS:
            if text.startswith(punct, start):
                if punct == "?." and _is_digit(text[start + 2:start + 3]):
                    punct = "?"
                self.i = start + len(punct)
                return Token("punct", punct, start)
        raise self.error(f"unexpected character {ch!r}", start)

    def number(self) -> Token:
        """Scan a numeric literal; a name glued to it (`1abc`) is an error, as in JavaScript."""
        text, start = self.text, self.i
        match = _NUMBER.match(text, start)
        if match is None:
            raise self.error("malformed number", start)
        end = match.end()
        if end < len(text) and _is_name_part(text[end]):
            raise self.error("malformed number", start)
        self.i = end
        return Token("num", match.group(), start, _number_value(match.group()))

    def string(self, quote: str) -> Token:
        """Scan a quoted string literal, decoding JavaScript escapes."""
        text, start = self.text, self.i
        out: list[str] = []
        i = start + 1
        while i < len(text):
            ch = text[i]
            if ch == quote:
                self.i = i + 1
                value = _combine_surrogates("".join(out))
                return Token("str", text[start:self.i], start, value)
            if ch in _LINE_BREAKS:
                break
            if ch == "\\":
                decoded, i = self.escape(i)
                out.append(decoded)
                continue
            out.append(ch)
            i += 1
        raise self.error("unterminated string", start)

    def escape(self, i: int) -> tuple[str, int]:
        """Decode the escape sequence whose backslash is at `i`; returns (text, next index)."""
        text = self.text
        if i + 1 >= len(text):
            raise self.error("unterminated string", i)
        ch = text[i + 1]
        if ch in _SIMPLE_ESCAPES and not (ch == "0" and _is_digit(text[i + 2:i + 3])):
            return _SIMPLE_ESCAPES[ch], i + 2
        if ch == "x":
            return self.hex_escape(i, i + 2, 2)
        if ch == "u":
            if text[i + 2:i + 3] == "{":
                close = text.find("}", i + 3)
                if close == -1:
                    raise self.error("malformed \\u{...} escape", i)
                return self.hex_escape(i, i + 3, close - (i + 3), after=close + 1)
            return self.hex_escape(i, i + 2, 4)
        if ch == "\r" and text[i + 2:i + 3] == "\n":
            return "", i + 3
        if ch in _LINE_BREAKS:
            return "", i + 2
        if _is_digit(ch):
            raise self.error("octal escapes are not allowed", i)
        return ch, i + 2

    def hex_escape(self, backslash: int, start: int, width: int, after: int | None = None) -> tuple[str, int]:
        """Decode `width` hex digits at `start` into one character."""
        digits = self.text[start:start + width]
        if not digits or len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise self.error("malformed escape sequence", backslash)
        code = int(digits, 16)
        if code > 0x10FFFF:
            raise self.error("escape sequence out of range", backslash)
        return chr(code), start + width if after is None else after


def tokenize(text: str) -> list[Token]:
    """The tokens of `text`, ending with an `end` token; raises ExpressionError."""
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"expression is {len(text)} characters long, over the limit of {MAX_LENGTH}", text
        )
    return _Scanner(text).run()
