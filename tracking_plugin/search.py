# Over 600 lines on purpose: the whole filter grammar (tokenizer, parser, tree, checks per
# entity) in one place, so runs, experiments and model versions parse filters identically.
"""The search filter grammar: MLflow's, plus ``OR`` and parentheses.

A filter is parsed once into a small, frozen AST and then compiled to SQLAlchemy by the
store that owns the tables. The run store, the experiment search and the registry searches
share this module: each describes what its filters may mention with a :class:`FilterSpec`.

Grammar (keywords are case-insensitive; ``AND`` binds tighter than ``OR``)::

    filter      := or_expr
    or_expr     := and_expr ( OR and_expr )*
    and_expr    := term ( AND term )*
    term        := "(" or_expr ")" | comparison
    comparison  := identifier operator [value]
    identifier  := [entity "."] key           entity: metrics | params | tags | attributes
                                              (and MLflow's aliases: metric, param,
                                              parameter(s), tag, attr, run, dataset(s))
    key         := bare | "double quoted" | `backticked`     bare: letters, digits, _ - . / :
    operator    := = | != | < | <= | > | >= | LIKE | ILIKE | IN | NOT IN | IS NULL | IS NOT NULL
                   (``==`` and ``<>`` are accepted as ``=`` and ``!=``)
    value       := 'single quoted' | "double quoted" | number | "(" value ("," value)* ")"

An identifier without an entity is an attribute (``status``, ``start_time``, ...). Strings
use ``''`` for a quote inside a quoted string. ``LIKE`` is case-sensitive and ``ILIKE`` is
not, on SQLite and PostgreSQL alike; ``\\`` escapes ``%`` and ``_`` in their patterns.
A comparison on a metric, param or tag matches only items that *have* that key (as in
MLflow): ``params.lr != '0.1'`` does not match runs without an ``lr`` param; use
``params.lr IS NULL`` for those. NaN metric values only match ``!=`` and ``NOT IN``.

Beyond MLflow: ``OR`` and parentheses, ``IN``/``NOT IN`` on every key, ``IS [NOT] NULL``
on metrics and attributes. Bounds: 100,000 characters, 200 comparisons, parentheses 100
deep, 10,000 ``IN`` values (larger filters would exceed what the databases accept).

Public API (the registry store uses the same functions with its own spec)::

    parse_filter(text, spec=RUN_FILTER) -> Expr | None     # Expr = Comparison | And | Or
    parse_order_by(text, spec=RUN_FILTER) -> OrderBy
    compile_filter(expr, leaf) -> ColumnElement[bool]       # leaf(Comparison) -> SQL
    compare(column, op, value, dialect=...) -> ColumnElement[bool]
    key_value_filter(owner, table, owner_fk=..., comparison=..., dialect=...)
    key_value_rows(table, comparison, dialect=...)         # the matching key/value rows
    check_max_results(n, limit=...), encode_page_token(offset), decode_page_token(token)

>>> expr = parse_filter("metrics.acc > 0.9 and (params.model = 'rf' or tags.`team x` LIKE 'a%')")
>>> expr.operands[0]
Comparison(entity_type='metric', key='acc', op='>', value=0.9)
>>> [c.key for c in expr.operands[1].operands]
['model', 'team x']
>>> parse_order_by("metrics.acc DESC")
OrderBy(entity_type='metric', key='acc', ascending=False)
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from tracking_plugin.errors import InvalidArgument
from tracking_plugin.validation import validate_storable

__all__ = [
    "And",
    "Comparison",
    "EXPERIMENT_FILTER",
    "Expr",
    "FilterSpec",
    "Or",
    "OrderBy",
    "RUN_FILTER",
    "ValueKind",
    "check_max_results",
    "compare",
    "compile_filter",
    "decode_page_token",
    "encode_page_token",
    "iter_comparisons",
    "key_value_filter",
    "key_value_rows",
    "parse_filter",
    "parse_order_by",
]

Value = Union[str, int, float, tuple[Union[str, int, float], ...], None]


# ---------------------------------------------------------------------------- AST


@dataclass(frozen=True, slots=True)
class Comparison:
    """``<entity_type>.<key> <op> <value>``.

    ``entity_type`` is ``'metric'``, ``'param'``, ``'tag'``, ``'attribute'`` or
    ``'dataset'`` (aliases already resolved); ``op`` is upper case (``'='``, ``'!='``,
    ``'<'``, ``'<='``, ``'>'``, ``'>='``, ``'LIKE'``, ``'ILIKE'``, ``'IN'``, ``'NOT IN'``,
    ``'IS NULL'``, ``'IS NOT NULL'``); ``value`` is a ``str``, ``int``, ``float``, a tuple
    of those for ``IN``/``NOT IN``, or ``None`` for ``IS [NOT] NULL``. Attribute aliases
    (``created``) are resolved to their canonical key (``start_time``).
    """

    entity_type: str
    key: str
    op: str
    value: Value
    position: int = field(default=0, compare=False, repr=False)  # offset in the filter text


@dataclass(frozen=True, slots=True)
class And:
    """All operands hold (at least two operands)."""

    operands: tuple["Expr", ...]


@dataclass(frozen=True, slots=True)
class Or:
    """At least one operand holds (at least two operands)."""

    operands: tuple["Expr", ...]


Expr = Union[Comparison, And, Or]


@dataclass(frozen=True, slots=True)
class OrderBy:
    """One ``order_by`` clause, e.g. ``metrics.acc DESC``."""

    entity_type: str
    key: str
    ascending: bool = True


def iter_comparisons(expr: Expr | None) -> list[Comparison]:
    """All comparisons of ``expr``, left to right."""
    if expr is None:
        return []
    if isinstance(expr, Comparison):
        return [expr]
    out: list[Comparison] = []
    for operand in expr.operands:
        out.extend(iter_comparisons(operand))
    return out


# --------------------------------------------------------------------------- spec


class ValueKind(str, enum.Enum):
    """What values a key compares with: numbers (=, <, ...) or strings (=, LIKE, ...)."""

    NUMBER = "number"
    STRING = "string"


NUMBER_OPS = ("=", "!=", "<", "<=", ">", ">=", "IN", "NOT IN", "IS NULL", "IS NOT NULL")
STRING_OPS = ("=", "!=", "LIKE", "ILIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL")

_ENTITY_ALIASES = {
    "metric": "metric",
    "metrics": "metric",
    "param": "param",
    "params": "param",
    "parameter": "param",
    "parameters": "param",
    "tag": "tag",
    "tags": "tag",
    "attribute": "attribute",
    "attributes": "attribute",
    "attr": "attribute",
    "run": "attribute",
    "dataset": "dataset",
    "datasets": "dataset",
}
_ENTITY_SPELLING = {
    "metric": "metrics", "param": "params", "tag": "tags", "attribute": "attributes", "dataset": "datasets",
}


@dataclass(frozen=True)
class FilterSpec:
    """What the filters (and ``order_by``) of one kind of search may mention.

    ``entities`` maps key/value entity types (``'metric'``, ``'param'``, ``'tag'``) to the
    kind of their values; ``attributes`` maps attribute keys to theirs; ``aliases`` maps
    alternative attribute names to canonical ones; ``ops`` can narrow the operators of an
    attribute (default: all operators of its kind). ``example`` is quoted in error messages.

    >>> spec = FilterSpec(subject="registered models", entities={"tag": ValueKind.STRING},
    ...                   attributes={"name": ValueKind.STRING}, example="name LIKE 'fraud%'")
    >>> parse_filter("name = 'x' or tags.team = 'risk'", spec).operands[1].entity_type
    'tag'
    """

    subject: str
    entities: Mapping[str, ValueKind]
    attributes: Mapping[str, ValueKind]
    example: str
    aliases: Mapping[str, str] = field(default_factory=dict)
    ops: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def ops_for(self, entity_type: str, key: str, kind: ValueKind) -> tuple[str, ...]:
        if entity_type == "attribute" and key in self.ops:
            return self.ops[key]
        return NUMBER_OPS if kind is ValueKind.NUMBER else STRING_OPS


RUN_FILTER = FilterSpec(
    subject="runs",
    entities={"metric": ValueKind.NUMBER, "param": ValueKind.STRING, "tag": ValueKind.STRING},
    attributes={
        "run_id": ValueKind.STRING,
        "run_name": ValueKind.STRING,
        "status": ValueKind.STRING,
        "user_id": ValueKind.STRING,
        "artifact_uri": ValueKind.STRING,
        "lifecycle_stage": ValueKind.STRING,
        "start_time": ValueKind.NUMBER,
        "end_time": ValueKind.NUMBER,
    },
    aliases={"created": "start_time", "Created": "start_time", "run name": "run_name",
             "Run name": "run_name", "Run Name": "run_name", "run_uuid": "run_id"},
    example="metrics.acc > 0.9 and params.model = 'rf'",
)

EXPERIMENT_FILTER = FilterSpec(
    subject="experiments",
    entities={"tag": ValueKind.STRING},
    attributes={
        "name": ValueKind.STRING,
        "experiment_id": ValueKind.STRING,
        "creation_time": ValueKind.NUMBER,
        "last_update_time": ValueKind.NUMBER,
    },
    ops={"experiment_id": ("=", "!=", "IN", "NOT IN")},
    example="name LIKE 'fraud%' and tags.team = 'risk'",
)


# ------------------------------------------------------------------------- parser

_WS = re.compile(r"\s*")
_ENTITY_WORD = re.compile(r"[A-Za-z_][\w\-/:]*")
_BARE_KEY = re.compile(r"[\w\-/:.]+")
_WORD = re.compile(r"[A-Za-z_]\w*")
_SYMBOL_OP = re.compile(r"<=|>=|!=|<>|==|=|<|>")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?![\w.])")
_INT64 = 2**63
_SYMBOL_RUN = re.compile(r"[<>=!]+")
_SYMBOL_OPS = {"<=", ">=", "!=", "<>", "==", "=", "<", ">"}
# One token, for error messages: a quoted string (maybe unterminated), a word or number, or
# one operator or symbol.
_TOKEN = re.compile(r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|`[^`]*`?|[\w.\-/:+]+|<=|>=|!=|<>|==|\S")
_KEYWORDS = {"AND", "OR", "NOT", "IN", "IS", "NULL", "LIKE", "ILIKE"}
_OPERATOR_LIST = "=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN, IS NULL, IS NOT NULL"
# Bounds that keep a filter within what the databases accept (SQLite: expression depth
# 1,000 and 32,766 bound parameters); the parser recurses once per parenthesis.
_MAX_FILTER_LEN = 100_000
_MAX_DEPTH = 100
_MAX_COMPARISONS = 200
_MAX_LIST_ITEMS = 10_000


def _not_an_operator(symbols: str) -> str:
    """``'=>' is not an operator; did you mean '>='?`` for a run of comparison symbols."""
    guess = symbols[::-1] if symbols[::-1] in _SYMBOL_OPS else None
    if guess is None and len(set(symbols)) == 1 and symbols[0] in "<>=":
        guess = symbols[0]  # '>>', '==='
    elif guess is None and symbols.startswith("!="):
        guess = "!="  # '!=='
    hint = f"did you mean {guess!r}?" if guess else f"use one of {_OPERATOR_LIST}"
    return f"{symbols!r} is not an operator; {hint}"


class _Parser:
    def __init__(self, text: str, spec: FilterSpec, what: str = "filter", example: str | None = None) -> None:
        self.text = text
        self.spec = spec
        self.what = what
        self.example = example or spec.example
        self.pos = 0
        self.depth = 0
        self.comparisons = 0
        self.list_items = 0

    # -- errors

    def error(self, problem: str, pos: int | None = None, hint: str | None = None) -> InvalidArgument:
        pos = self.pos if pos is None else pos
        pos = _WS.match(self.text, pos).end()  # type: ignore[union-attr]
        token = _TOKEN.match(self.text, pos)
        where = f"at position {pos} (near {token.group(0)!r})" if token else f"at position {pos} (the end)"
        example = hint or self.example
        return InvalidArgument(
            f"Invalid {self.what} {_shown(self.text)!r}: {problem} {where}. "
            f"Example of a valid {self.what}: {example}"
        )

    # -- scanning

    def skip_ws(self) -> None:
        self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def at_end(self) -> bool:
        self.skip_ws()
        return self.pos >= len(self.text)

    def peek_word(self) -> str | None:
        self.skip_ws()
        m = _WORD.match(self.text, self.pos)
        return m.group(0).upper() if m else None

    def take_word(self, word: str) -> bool:
        self.skip_ws()
        m = _WORD.match(self.text, self.pos)
        if m and m.group(0).upper() == word:
            self.pos = m.end()
            return True
        return False

    def take_char(self, char: str) -> bool:
        self.skip_ws()
        if self.text.startswith(char, self.pos):
            self.pos += len(char)
            return True
        return False

    def quoted(self, quote: str, what: str) -> str:
        """Read a quoted token starting at self.pos; a doubled quote stands for one."""
        start = self.pos
        closing = "`" if quote == "`" else quote
        i = start + 1
        parts: list[str] = []
        while True:
            j = self.text.find(closing, i)
            if j < 0:
                raise self.error(f"unterminated {what} (missing closing {closing})", start)
            parts.append(self.text[i:j])
            if self.text.startswith(closing * 2, j):
                parts.append(closing)
                i = j + 2
                continue
            self.pos = j + 1
            return "".join(parts)

    # -- grammar

    def parse_filter(self) -> Expr:
        expr = self.or_expr()
        if not self.at_end():
            raise self.error("expected AND, OR or the end of the filter")
        return expr

    def or_expr(self) -> Expr:
        operands = [self.and_expr()]
        while self.take_word("OR"):
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_expr(self) -> Expr:
        operands = [self.term()]
        while self.take_word("AND"):
            operands.append(self.term())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def term(self) -> Expr:
        self.skip_ws()
        start = self.pos
        if self.take_char("("):
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise self.error(f"parentheses nested deeper than {_MAX_DEPTH}", start)
            expr = self.or_expr()
            if not self.take_char(")"):
                raise self.error(f"expected ')' to close the '(' opened at position {start}")
            self.depth -= 1
            return expr
        return self.comparison()

    def identifier(self) -> tuple[str, str, int]:
        """Return (entity_type, key, position); the key is not validated yet."""
        self.skip_ws()
        start = self.pos
        if start >= len(self.text):
            raise self.error("expected a key such as metrics.<name>, params.<name> or an attribute")
        char = self.text[start]
        if char in "\"`":
            return "attribute", self.quoted(char, "quoted key"), start
        m = _ENTITY_WORD.match(self.text, start)
        if not m:
            raise self.error("expected a key such as metrics.<name>, params.<name> or an attribute")
        word = m.group(0)
        self.pos = m.end()
        if not self.text.startswith(".", self.pos):
            if word.upper() in _KEYWORDS:
                raise self.error(f"expected a key, found the keyword {word.upper()}", start)
            return "attribute", word, start
        entity = _ENTITY_ALIASES.get(word.lower())
        if entity is None:
            valid = ", ".join(sorted({_ENTITY_SPELLING[e] for e in ("attribute", *self.spec.entities)}))
            raise self.error(f"unknown entity {word!r} (valid: {valid})", start)
        self.pos += 1  # the dot
        if self.pos < len(self.text) and self.text[self.pos] in "\"`":
            return entity, self.quoted(self.text[self.pos], "quoted key"), start
        k = _BARE_KEY.match(self.text, self.pos)
        if not k:
            raise self.error(
                f"expected a key after '{word}.' (quote keys with spaces or symbols: "
                f'{word}."my key" or {word}.`my key`)'
            )
        self.pos = k.end()
        return entity, k.group(0), start

    def resolve_key(self, entity: str, key: str, pos: int) -> tuple[str, ValueKind]:
        spec = self.spec
        if entity == "attribute":
            key = spec.aliases.get(key, key)
            kind = spec.attributes.get(key)
            if kind is None:
                valid = ", ".join(sorted(spec.attributes))
                guess = ""
                if "metric" in spec.entities:
                    guess = f" (for a metric, param or tag write metrics.{key}, params.{key} or tags.{key})"
                raise self.error(
                    f"unknown attribute {key!r} for {spec.subject}; valid attributes: {valid}{guess}", pos
                )
            return key, kind
        kind = spec.entities.get(entity)
        if kind is None:
            valid = ", ".join(sorted(_ENTITY_SPELLING[e] for e in spec.entities)) or "none"
            raise self.error(
                f"{_ENTITY_SPELLING[entity]}.{key} cannot be used when searching {spec.subject} "
                f"(entities: {valid}; attributes: {', '.join(sorted(spec.attributes))})",
                pos,
            )
        if not key:
            raise self.error("empty key", pos)
        return key, kind

    def operator(self) -> str:
        self.skip_ws()
        start = self.pos
        run = _SYMBOL_RUN.match(self.text, start)
        if run and run.group(0) not in _SYMBOL_OPS:
            raise self.error(_not_an_operator(run.group(0)), start)
        m = _SYMBOL_OP.match(self.text, start)
        if m:
            self.pos = m.end()
            return {"==": "=", "<>": "!="}.get(m.group(0), m.group(0))
        word = self.peek_word()
        if word in ("LIKE", "ILIKE", "IN"):
            self.take_word(word)
            return word
        if word == "NOT":
            self.take_word("NOT")
            if self.take_word("IN"):
                return "NOT IN"
            raise self.error("expected IN after NOT (NOT IN)", self.pos)
        if word == "IS":
            self.take_word("IS")
            if self.take_word("NULL"):
                return "IS NULL"
            if self.take_word("NOT") and self.take_word("NULL"):
                return "IS NOT NULL"
            raise self.error("expected NULL or NOT NULL after IS", self.pos)
        raise self.error(f"expected an operator ({_OPERATOR_LIST})", start)

    def scalar(self, entity: str, key: str, kind: ValueKind) -> str | int | float:
        self.skip_ws()
        start = self.pos
        label = f"{_ENTITY_SPELLING[entity]}.{key}" if entity != "attribute" else key
        if start < len(self.text) and self.text[start] in "'\"":
            text = self.quoted(self.text[start], "string")
            if kind is ValueKind.NUMBER:
                raise self.error(
                    f"{label} compares with numbers, not the string {text!r}", start,
                    hint=f"{label} > 0.5" if entity != "attribute" else f"{label} > 1700000000000",
                )
            return text
        m = _NUMBER.match(self.text, start)
        if m:
            if kind is ValueKind.STRING:
                raise self.error(
                    f"{label} compares with quoted strings, not the number {m.group(0)}", start,
                    hint=f"{label} = '{m.group(0)}'",
                )
            self.pos = m.end()
            return _number(m.group(0))
        if self.peek_word() == "NULL":
            raise self.error("compare with NULL using IS NULL or IS NOT NULL", start, hint=f"{label} IS NULL")
        if kind is ValueKind.NUMBER:
            example = f"{label} >= 0.9" if entity != "attribute" else f"{label} >= 1700000000000"
            raise self.error(f"expected a number for {label}", start, hint=example)
        raise self.error(f"expected a quoted string for {label}", start, hint=f"{label} = 'my-value'")

    def comparison(self) -> Comparison:
        self.skip_ws()
        self.comparisons += 1
        if self.comparisons > _MAX_COMPARISONS:
            raise self.error(
                f"more than {_MAX_COMPARISONS} comparisons (use IN (...) lists or several searches)"
            )
        entity, raw_key, start = self.identifier()
        key, kind = self.resolve_key(entity, raw_key, start)
        op_pos = self.pos
        op = self.operator()
        label = f"{_ENTITY_SPELLING[entity]}.{key}" if entity != "attribute" else key
        allowed = self.spec.ops_for(entity, key, kind)
        if op not in allowed:
            raise self.error(
                f"operator {op} cannot be used with {label} (a {kind.value} key; use one of "
                f"{', '.join(allowed)})",
                _WS.match(self.text, op_pos).end(),  # type: ignore[union-attr]
            )
        value: Value
        if op in ("IS NULL", "IS NOT NULL"):
            value = None
        elif op in ("IN", "NOT IN"):
            if not self.take_char("("):
                raise self.error(f"expected '(' and a list after {op}", hint=f"{label} {op} ('a', 'b')"
                                 if kind is ValueKind.STRING else f"{label} {op} (1, 2)")
            items = [self.scalar(entity, key, kind)]
            while self.take_char(","):
                items.append(self.scalar(entity, key, kind))
                self.list_items += 1
                if self.list_items > _MAX_LIST_ITEMS:
                    raise self.error(f"more than {_MAX_LIST_ITEMS} values in IN lists")
            if not self.take_char(")"):
                raise self.error("expected ',' or ')' in the list")
            value = tuple(items)
        else:
            value_pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]
            value = self.scalar(entity, key, kind)
            if op in ("LIKE", "ILIKE") and _ends_with_escape(str(value)):
                raise self.error(
                    "the pattern ends with the escape character '\\' (write '\\\\' for a "
                    "literal backslash)", value_pos
                )
        return Comparison(entity, key, op, value, start)

    def order_by(self) -> OrderBy:
        entity, raw_key, start = self.identifier()
        key, _ = self.resolve_key(entity, raw_key, start)
        ascending = True
        word = self.peek_word()
        if word in ("ASC", "DESC"):
            self.take_word(word)
            ascending = word == "ASC"
        if not self.at_end():
            raise self.error("expected ASC, DESC or the end of the clause")
        return OrderBy(entity, key, ascending)


def _number(literal: str) -> int | float:
    # Integers beyond 64 bits become floats: drivers cannot bind them as integers.
    if re.fullmatch(r"[+-]?\d+", literal) and len(literal) < 25:
        value = int(literal)
        if -_INT64 <= value < _INT64:
            return value
    return float(literal)


def _ends_with_escape(pattern: str) -> bool:
    trailing = len(pattern) - len(pattern.rstrip("\\"))
    return trailing % 2 == 1


def _shown(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _check_text(text: Any, what: str) -> str:
    if not isinstance(text, str):
        raise InvalidArgument(f"Invalid {what} {text!r}: it must be a string.")
    if len(text) > _MAX_FILTER_LEN:
        raise InvalidArgument(f"The {what} has {len(text)} characters, the limit is {_MAX_FILTER_LEN}.")
    return validate_storable(text, what)  # NUL and lone surrogates: refused alike on every database


def parse_filter(text: str | None, spec: FilterSpec = RUN_FILTER) -> Expr | None:
    """Parse a search filter; ``None`` for an empty or blank filter.

    Raises :class:`~tracking_plugin.errors.InvalidArgument` naming the offending token,
    its position and an example of a valid filter.

    >>> parse_filter("status = 'FINISHED' OR start_time >= 1700000000000").operands[1]
    Comparison(entity_type='attribute', key='start_time', op='>=', value=1700000000000)
    >>> parse_filter("   ") is None
    True
    """
    if text is None:
        return None
    _check_text(text, "filter")
    if not text.strip():
        return None
    return _Parser(text, spec).parse_filter()


def parse_order_by(text: str, spec: FilterSpec = RUN_FILTER) -> OrderBy:
    """Parse one ``order_by`` clause: ``<identifier> [ASC|DESC]`` (ascending by default).

    >>> parse_order_by("params.`learning rate`")
    OrderBy(entity_type='param', key='learning rate', ascending=True)
    """
    _check_text(text, "order_by clause")
    example = {
        "runs": "metrics.acc DESC",
        "experiments": "creation_time DESC",
    }.get(spec.subject, f"{sorted(spec.attributes)[0]} DESC" if spec.attributes else "name")
    if not text.strip():
        raise InvalidArgument(f"Invalid order_by clause {text!r}: it is empty. Example: {example}")
    return _Parser(text, spec, "order_by clause", example).order_by()


# ---------------------------------------------------------------- SQL compilation


def compile_filter(expr: Expr, leaf: Callable[[Comparison], ColumnElement[bool]]) -> ColumnElement[bool]:
    """Fold ``expr`` into one SQL condition; ``leaf`` compiles each :class:`Comparison`."""
    if isinstance(expr, Comparison):
        return leaf(expr)
    parts = [compile_filter(operand, leaf) for operand in expr.operands]
    return sa.and_(*parts) if isinstance(expr, And) else sa.or_(*parts)


def _like_to_glob(pattern: str) -> str:
    """Translate a LIKE pattern (``\\`` escapes) to a case-sensitive SQLite GLOB pattern."""
    out: list[str] = []
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            char = next(chars, "\\")
            out.append({"*": "[*]", "?": "[?]", "[": "[[]"}.get(char, char))
        elif char == "%":
            out.append("*")
        elif char == "_":
            out.append("?")
        else:
            out.append({"*": "[*]", "?": "[?]", "[": "[[]"}.get(char, char))
    return "".join(out)


def compare(column: Any, op: str, value: Value, *, dialect: str) -> ColumnElement[bool]:
    """``column <op> value`` with the same meaning on SQLite and PostgreSQL.

    ``LIKE`` is case-sensitive (SQLite's own LIKE is not: it runs as ``GLOB`` there) and
    ``ILIKE`` is not; both take ``\\`` as the escape character.
    """
    if op == "=":
        return column == value
    if op == "!=":
        return column != value
    if op == "<":
        return column < value
    if op == "<=":
        return column <= value
    if op == ">":
        return column > value
    if op == ">=":
        return column >= value
    if op == "LIKE":
        if dialect == "sqlite":
            return column.op("GLOB")(_like_to_glob(str(value)))
        return column.like(value, escape="\\")
    if op == "ILIKE":
        return column.ilike(value, escape="\\")
    if op == "IN":
        return column.in_(list(value or ()))  # type: ignore[arg-type]
    if op == "NOT IN":
        return column.not_in(list(value or ()))  # type: ignore[arg-type]
    if op == "IS NULL":
        return column.is_(None)
    if op == "IS NOT NULL":
        return column.is_not(None)
    raise InvalidArgument(f"Unsupported operator {op!r}; use one of {_OPERATOR_LIST}.")


def _number_test(left: float, op: str, value: Value) -> bool:
    """Python's answer to ``left <op> value`` for the numeric operators."""
    if op in ("IN", "NOT IN"):
        found = any(left == v for v in value or ())  # type: ignore[union-attr]
        return found if op == "IN" else not found
    right: Any = value
    return {
        "=": left == right, "!=": left != right, "<": left < right,
        "<=": left <= right, ">": left > right, ">=": left >= right,
    }[op]


# PostgreSQL indexes params/tags values by their first 200 characters only (b-trees cannot
# hold 8 KB values); equality also tests the prefix so the planner can use that index.
PG_VALUE_PREFIX = 200


def key_value_rows(
    table: sa.Table, comparison: Comparison, *, dialect: str, prefix_indexed: bool = False
) -> ColumnElement[bool]:
    """The rows of a key/value table that satisfy ``comparison`` (key match and value test).

    For ``IS NULL``/``IS NOT NULL`` it is the key match alone (the caller negates). A table
    with an ``is_nan`` column (metrics) treats NaN as IEEE does: it only matches ``!=`` and
    ``NOT IN``. ``prefix_indexed`` adds ``left(value, 200) = left(:v, 200)`` to equality
    tests on PostgreSQL, for tables indexed on that prefix (params, run tags).
    """
    key_match = table.c.key == comparison.key
    op, value = comparison.op, comparison.value
    if op in ("IS NULL", "IS NOT NULL"):
        return key_match
    value_col = table.c.value
    if "is_nan" in table.c:
        # Metric values are floats: bind them as floats. (SQLAlchemy types a literal by its
        # Python type, and an IN list by its first item: on PostgreSQL `IN (-1, 0.1)` was
        # bound as integers, 0.1 becoming 0 and 1e308 overflowing.)
        value = tuple(float(v) for v in value) if isinstance(value, tuple) else float(value)  # type: ignore[arg-type]
    test = compare(value_col, op, value, dialect=dialect)
    if "is_nan" in table.c:
        # NaN is stored as value 0 with is_nan set. Test is_nan only where the stored 0
        # would answer differently from NaN, so most range filters stay index-only.
        nan_matches = op in ("!=", "NOT IN")
        if _number_test(0.0, op, value) != nan_matches:
            nan = table.c.is_nan
            test = sa.or_(nan.is_(True), test) if nan_matches else sa.and_(nan.is_(False), test)
    elif prefix_indexed and dialect == "postgresql" and op in ("=", "IN"):
        prefix = sa.func.left(value_col, PG_VALUE_PREFIX)
        values = [str(value)] if op == "=" else [str(v) for v in value or ()]  # type: ignore[union-attr]
        prefixes = sorted({v[:PG_VALUE_PREFIX] for v in values})
        prefix_test = prefix == prefixes[0] if op == "=" else prefix.in_(prefixes)
        # Values shorter than the prefix: the prefix test alone is the same condition (a
        # longer stored value has a 200-character prefix). Said twice, the planner
        # multiplies both selectivities and underestimates the matches (a third of a
        # million params read as a ninth: a hash join over a sequential scan).
        short = all(len(v) < PG_VALUE_PREFIX for v in values)
        test = prefix_test if short else sa.and_(prefix_test, test)
    return sa.and_(key_match, test)


def key_value_filter(
    owner: Any,
    table: sa.Table,
    *,
    owner_fk: str,
    comparison: Comparison,
    dialect: str,
    prefix_indexed: bool = False,
    correlated: bool = False,
) -> ColumnElement[bool]:
    """Filter owners (runs, models, versions) by a row of a key/value table.

    Compiles to ``owner IN (SELECT <owner_fk> FROM table WHERE <key_value_rows>)``
    (``NOT IN`` for ``IS NULL``), which the key/value indexes answer: the database starts
    from the matching rows. With ``correlated=True`` it is ``EXISTS (SELECT ... WHERE
    <owner_fk> = owner AND ...)`` instead, probed once per owner through the primary key:
    better when most owners match and only the first page is wanted.
    """
    rows = key_value_rows(table, comparison, dialect=dialect, prefix_indexed=prefix_indexed)
    fk = table.c[owner_fk]
    if correlated:
        found = sa.exists().where(fk == owner, rows)
        return ~found if comparison.op == "IS NULL" else found
    subquery = sa.select(fk).where(rows)
    return owner.not_in(subquery) if comparison.op == "IS NULL" else owner.in_(subquery)


# ------------------------------------------------------------------------- paging


def check_max_results(max_results: Any, *, limit: int = 50_000) -> int:
    """Return ``max_results`` if it is an integer in ``1..limit``; else InvalidArgument."""
    if isinstance(max_results, bool) or not isinstance(max_results, int) or not 1 <= max_results <= limit:
        raise InvalidArgument(
            f"Invalid max_results {max_results!r}: it must be an integer from 1 to {limit}; "
            "use page_token to read further pages."
        )
    return max_results


def encode_page_token(offset: int, after: tuple[int, str] | None = None) -> str:
    """An opaque token for the page starting at ``offset``; ``after``: the sort key
    (start_time, run id) of the previous page's last run, for keyset pagination."""
    data: dict[str, Any] = {"offset": offset}
    if after is not None:
        data["after"] = [after[0], after[1]]
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def decode_page_after(token: str | None) -> tuple[int, str] | None:
    """The keyset position stored in ``token`` by ``encode_page_token(..., after=...)``,
    or None (no token, or an offset-only token). Call after :func:`decode_page_token`,
    which validates the token; a malformed ``after`` is InvalidArgument too."""
    if not token:
        return None
    data = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    after = data.get("after") if isinstance(data, dict) else None
    if after is None:
        return None
    if (
        not isinstance(after, list) or len(after) != 2 or isinstance(after[0], bool)
        or not isinstance(after[0], int) or not isinstance(after[1], str) or len(after[1]) > 64
    ):
        raise InvalidArgument(
            f"Invalid page_token {token!r}: pass the token returned with the previous page "
            "(PagedList.token) unchanged, or None for the first page."
        )
    return after[0], after[1]


def decode_page_token(token: str | None) -> int:
    """The offset stored in ``token`` (0 for None/empty); InvalidArgument for garbage."""
    if token is None or token == "":
        return 0
    try:
        if not isinstance(token, str) or len(token) > 200:
            raise ValueError(token)
        data = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        offset = data["offset"]
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(offset)
        return offset
    except (AttributeError, UnicodeError, binascii.Error, ValueError, TypeError, KeyError) as exc:
        raise InvalidArgument(
            f"Invalid page_token {token!r}: pass the token returned with the previous page "
            "(PagedList.token) unchanged, or None for the first page."
        ) from exc
