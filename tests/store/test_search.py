"""The search filter grammar: the parser alone, then search_runs on SQLite and PostgreSQL.

The property tests build random filters from a generator, render them with random
spelling (keyword case, entity aliases, quoting, optional parentheses) and check that
(1) they parse back to the same tree and (2) search_runs returns exactly the runs a plain
Python evaluator selects on a fixed set of runs.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracking_plugin.entities import Metric, Param, Run, RunStatus, RunTag, ViewType
from tracking_plugin.errors import InvalidArgument
from tracking_plugin.search import (
    EXPERIMENT_FILTER,
    And,
    Comparison,
    Expr,
    FilterSpec,
    Or,
    OrderBy,
    ValueKind,
    decode_page_token,
    encode_page_token,
    parse_filter,
    parse_order_by,
)
from tracking_plugin.store.sql import SqlStore

T0 = 1_700_000_000_000


def C(entity: str, key: str, op: str, value: Any = None) -> Comparison:
    return Comparison(entity, key, op, value)


# ======================================================================= parser


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics.acc > 0.9", C("metric", "acc", ">", 0.9)),
        ("metric.acc >= 1", C("metric", "acc", ">=", 1)),
        ("metrics.acc<-1.5e3", C("metric", "acc", "<", -1500.0)),
        ("metrics.acc <= .5", C("metric", "acc", "<=", 0.5)),
        ("metrics.acc = 2", C("metric", "acc", "=", 2)),
        ("metrics.acc == 2", C("metric", "acc", "=", 2)),
        ("metrics.acc != 2", C("metric", "acc", "!=", 2)),
        ("metrics.acc <> 2", C("metric", "acc", "!=", 2)),
        ("metrics.acc IN (1, 2.5)", C("metric", "acc", "IN", (1, 2.5))),
        ("metrics.acc not in (1)", C("metric", "acc", "NOT IN", (1,))),
        ("metrics.acc IS NULL", C("metric", "acc", "IS NULL")),
        ("metrics.acc is not null", C("metric", "acc", "IS NOT NULL")),
        ("metrics.acc > 1e999", C("metric", "acc", ">", math.inf)),
        ("metrics.acc > 99999999999999999999", C("metric", "acc", ">", 1e20)),
        ("params.model = 'rf'", C("param", "model", "=", "rf")),
        ('params.model = "rf"', C("param", "model", "=", "rf")),
        ("parameters.model != 'it''s'", C("param", "model", "!=", "it's")),
        ("param.model LIKE 'r%'", C("param", "model", "LIKE", "r%")),
        ("params.model ilike 'R_'", C("param", "model", "ILIKE", "R_")),
        ("params.model IN ('rf', 'lr')", C("param", "model", "IN", ("rf", "lr"))),
        ("params.model NOT IN ('rf')", C("param", "model", "NOT IN", ("rf",))),
        ("params.model IS NULL", C("param", "model", "IS NULL")),
        ("tags.`my key` = 'x'", C("tag", "my key", "=", "x")),
        ("tags.\"my key\" = 'x'", C("tag", "my key", "=", "x")),
        ('tag."say ""hi""" = \'x\'', C("tag", 'say "hi"', "=", "x")),
        ("tags.mlflow.runName = 'x'", C("tag", "mlflow.runName", "=", "x")),
        ("tags.a/b:c-d = 'x'", C("tag", "a/b:c-d", "=", "x")),
        ("tags.1abc = 'x'", C("tag", "1abc", "=", "x")),
        ("status = 'FINISHED'", C("attribute", "status", "=", "FINISHED")),
        ("attributes.status != 'FAILED'", C("attribute", "status", "!=", "FAILED")),
        ("attr.run_name LIKE 'base%'", C("attribute", "run_name", "LIKE", "base%")),
        ("run.user_id = 'ada'", C("attribute", "user_id", "=", "ada")),
        ("`Run name` = 'x'", C("attribute", "run_name", "=", "x")),
        ("created > 5", C("attribute", "start_time", ">", 5)),
        ("attributes.start_time >= 1700000000000", C("attribute", "start_time", ">=", T0)),
        ("end_time IS NULL", C("attribute", "end_time", "IS NULL")),
        ("run_id IN ('a', 'b')", C("attribute", "run_id", "IN", ("a", "b"))),
        ("artifact_uri LIKE 's3://%'", C("attribute", "artifact_uri", "LIKE", "s3://%")),
        ("lifecycle_stage = 'deleted'", C("attribute", "lifecycle_stage", "=", "deleted")),
    ],
)
def test_each_operator_and_entity_parses(text: str, expected: Comparison) -> None:
    assert parse_filter(text) == expected


def test_precedence_parentheses_and_case() -> None:
    a, b, c = "metrics.a > 1", "params.b = 'x'", "tags.c = 'y'"
    A, B, Cc = parse_filter(a), parse_filter(b), parse_filter(c)
    assert parse_filter(f"{a} OR {b} AND {c}") == Or((A, And((B, Cc))))  # type: ignore[arg-type]
    assert parse_filter(f"{a} and {b} or {c}") == Or((And((A, B)), Cc))  # type: ignore[arg-type]
    assert parse_filter(f"({a} Or {b}) aNd {c}") == And((Or((A, B)), Cc))  # type: ignore[arg-type]
    assert parse_filter(f"{a} AND {b} AND {c}") == And((A, B, Cc))  # type: ignore[arg-type]
    assert parse_filter(f"((({a})))") == A
    assert parse_filter(f"({a})AND({b})") == And((A, B))  # type: ignore[arg-type]
    assert parse_filter("") is None and parse_filter("  \n ") is None and parse_filter(None) is None


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("metrics.acc > 'x'", ["position 14", "'x'", "numbers", "metrics.acc > 0.5"]),
        ("params.lr = 0.1", ["position 12", "quoted strings", "params.lr = '0.1'"]),
        ("acc > 0.9", ["unknown attribute 'acc'", "metrics.acc", "position 0"]),
        ("metrics.acc >", ["expected a number", "the end"]),
        ("metrics.acc ~ 1", ["expected an operator", "position 12", "near '~'"]),
        ("(metrics.a > 1", ["expected ')'", "opened at position 0"]),
        ("metrics.a > 1 foo = 'x'", ["expected AND, OR or the end", "position 14", "near 'foo'"]),
        ("foo.bar = 'x'", ["unknown entity 'foo'", "metrics, params, tags"]),
        ("metrics.a LIKE 'x'", ["operator LIKE cannot be used with metrics.a"]),
        ("params.a > 'x'", ["operator > cannot be used with params.a"]),
        ("params.a = NULL", ["IS NULL"]),
        ("params.a = rf", ["expected a quoted string", "params.a = 'my-value'"]),
        ("status IN 'a'", ["expected '('", "status IN ('a', 'b')"]),
        ("status IN ('a' 'b')", ["expected ',' or ')'"]),
        ("metrics.a > 1 and", ["expected a key", "the end"]),
        ("AND metrics.a > 1", ["keyword AND"]),
        ("metrics. = 1", ["expected a key after 'metrics.'", '"my key"']),
        ("tags.`a = 'x'", ["unterminated quoted key"]),
        ("tags.a = 'x", ["unterminated string"]),
        ("params.a IS 'x'", ["NULL or NOT NULL"]),
        ("params.a NOT LIKE 'x'", ["IN after NOT"]),
        ("tags.a LIKE 'x\\'", ["escape character"]),
        ("datasets.name = 'x'", ["datasets.name cannot be used when searching runs"]),
        ("start_time > '2024'", ["start_time compares with numbers"]),
        ("metrics.a > 5abc", ["expected a number"]),
        ("metrics.a > 1 OR OR metrics.b > 1", ["keyword OR"]),
        ("()", ["expected a key"]),
        ("metrics.a > 1)", ["expected AND, OR or the end"]),
        ("params.a = 'x\x00'", ["NUL"]),
        ("metrics.auc => 0.8", ["'=>' is not an operator; did you mean '>='?", "position 12"]),
        ("metrics.auc =< 0.8", ["'=<' is not an operator; did you mean '<='?"]),
        ("params.a =! 'x'", ["'=!' is not an operator; did you mean '!='?"]),
        ("metrics.auc >> 0.8", ["'>>' is not an operator; did you mean '>'?"]),
        ("metrics.auc ! 0.8", ["'!' is not an operator; use one of =, !=,"]),
    ],
)
def test_bad_filters_say_what_and_where(text: str, fragments: list[str]) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_filter(text)
    message = str(err.value)
    assert "Example" in message or "NUL" in message
    for fragment in fragments:
        assert fragment in message, message


def test_order_by_clauses() -> None:
    assert parse_order_by("metrics.acc DESC") == OrderBy("metric", "acc", False)
    assert parse_order_by("params.lr") == OrderBy("param", "lr", True)
    assert parse_order_by("attributes.start_time asc") == OrderBy("attribute", "start_time", True)
    assert parse_order_by("tags.`my key` Desc") == OrderBy("tag", "my key", False)
    assert parse_order_by("created DESC") == OrderBy("attribute", "start_time", False)
    for bad, fragment in [
        ("metrics.acc DOWN", "ASC, DESC"),
        ("", "empty"),
        ("acc", "unknown attribute"),
        ("metrics.acc DESC x", "ASC, DESC"),
    ]:
        with pytest.raises(InvalidArgument, match=fragment):
            parse_order_by(bad)


def test_a_custom_spec_for_other_searches() -> None:
    spec = FilterSpec(
        subject="model versions",
        entities={"tag": ValueKind.STRING},
        attributes={"name": ValueKind.STRING, "version_number": ValueKind.NUMBER},
        example="name = 'fraud' and version_number > 2",
    )
    assert parse_filter("name = 'm' and (version_number >= 3 or tags.stage = 'x')", spec) == And(
        (
            C("attribute", "name", "=", "m"),
            Or((C("attribute", "version_number", ">=", 3), C("tag", "stage", "=", "x"))),
        )
    )
    with pytest.raises(InvalidArgument, match="metrics.acc cannot be used when searching model versions"):
        parse_filter("metrics.acc > 1", spec)
    with pytest.raises(InvalidArgument, match="name = 'fraud' and version_number > 2"):
        parse_filter("status = 'x'", spec)
    with pytest.raises(InvalidArgument, match="experiment_id"):
        parse_filter("experiment_id < '3'", EXPERIMENT_FILTER)


def test_page_tokens() -> None:
    assert decode_page_token(encode_page_token(1234)) == 1234
    assert decode_page_token(None) == 0
    for garbage in ["x", "!!!", encode_page_token(-1), "eyJvZmZzZXQiOiAiMTAifQ==", "W10=", "é", "A" * 300]:
        with pytest.raises(InvalidArgument, match="page_token"):
            decode_page_token(garbage)


# ----------------------------------------------------- property tests: parser

METRIC_KEYS = ["acc", "loss", "missing"]
PARAM_KEYS = ["model", "lr", "missing"]
TAG_KEYS = ["team", "key with space", "missing"]
STRINGS = ["rf", "RF", "lr", "svm", "0.1", "0.01", "risk", "Risk", "risk_", "fraud%", "x", "", "it's"]
NUMBERS = [-1, 0, 0.1, 0.8, 0.95, 1, 1.5, 1e308]
LIKE_ATOMS = ["r", "f", "R", "s", "i", "k", "0", ".", "1", "%", "_", "\\%", "\\_", "'"]
STRING_OPS = ["=", "!=", "LIKE", "ILIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL"]
NUMBER_OPS = ["=", "!=", "<", "<=", ">", ">=", "IN", "NOT IN", "IS NULL", "IS NOT NULL"]


@st.composite
def comparisons(draw: Any, run_ids: tuple[str, ...] = ("0" * 32,)) -> Comparison:
    kind = draw(st.sampled_from(["metric", "param", "tag", "string_attr", "number_attr", "run_id"]))
    if kind == "metric":
        entity, key, numeric = "metric", draw(st.sampled_from(METRIC_KEYS)), True
    elif kind == "param":
        entity, key, numeric = "param", draw(st.sampled_from(PARAM_KEYS)), False
    elif kind == "tag":
        entity, key, numeric = "tag", draw(st.sampled_from(TAG_KEYS)), False
    elif kind == "string_attr":
        entity, key, numeric = (
            "attribute",
            draw(st.sampled_from(["status", "run_name", "user_id", "lifecycle_stage"])),
            False,
        )
    elif kind == "number_attr":
        entity, key, numeric = "attribute", draw(st.sampled_from(["start_time", "end_time"])), True
    else:
        return _run_id_comparison(draw, run_ids)
    op = draw(st.sampled_from(NUMBER_OPS if numeric else STRING_OPS))
    if entity == "attribute" and key in ("status", "run_name", "user_id", "lifecycle_stage"):
        pool: list[Any] = [
            "FINISHED",
            "FAILED",
            "RUNNING",
            "finished",
            "alpha",
            "beta",
            "ada",
            "bob",
            "active",
            "deleted",
        ]
    elif entity == "attribute":
        pool = [T0, T0 + 1, T0 + 2, T0 + 5, T0 + 10, 0]
    else:
        pool = NUMBERS if numeric else STRINGS
    if op in ("IS NULL", "IS NOT NULL"):
        value: Any = None
    elif op in ("IN", "NOT IN"):
        value = tuple(draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3)))
    elif op in ("LIKE", "ILIKE"):
        value = "".join(draw(st.lists(st.sampled_from(LIKE_ATOMS), max_size=5)))
    else:
        value = draw(st.sampled_from(pool))
    return C(entity, key, op, value)


def _run_id_comparison(draw: Any, run_ids: tuple[str, ...]) -> Comparison:
    op = draw(st.sampled_from(["IN", "NOT IN", "=", "!="]))
    if op in ("IN", "NOT IN"):
        return C(
            "attribute", "run_id", op, tuple(draw(st.lists(st.sampled_from(run_ids), min_size=1, max_size=3)))
        )
    return C("attribute", "run_id", op, draw(st.sampled_from(run_ids)))


def expressions(run_ids: tuple[str, ...] = ("0" * 32,)) -> st.SearchStrategy[Expr]:
    return st.recursive(
        comparisons(run_ids),
        lambda children: st.one_of(
            st.lists(children, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
            st.lists(children, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
        ),
        max_leaves=6,
    )


ENTITY_SPELLINGS = {
    "metric": ["metrics", "metric", "METRICS"],
    "param": ["params", "param", "parameters", "parameter"],
    "tag": ["tags", "tag"],
    "attribute": ["attributes", "attribute", "attr", "run", ""],
}


def _word(draw: Any, word: str) -> str:
    return draw(st.sampled_from([word.upper(), word.lower(), word.capitalize()]))


def render_value(draw: Any, value: Any) -> str:
    if isinstance(value, str):
        if draw(st.booleans()):
            return "'" + value.replace("'", "''") + "'"
        return '"' + value.replace('"', '""') + '"'
    return repr(value) if isinstance(value, float) else str(value)


def render_comparison(draw: Any, cmp: Comparison) -> str:
    entity = draw(st.sampled_from(ENTITY_SPELLINGS[cmp.entity_type]))
    key = cmp.key
    if key == "start_time" and draw(st.booleans()):
        key, entity = "created", ""
    simple = re.fullmatch(r"[A-Za-z_][\w]*", key) is not None
    if not simple or draw(st.integers(0, 3)) == 0:
        key = draw(st.sampled_from(["`" + key + "`", '"' + key.replace('"', '""') + '"']))
    ident = f"{entity}.{key}" if entity else key
    op = cmp.op
    if op in ("IS NULL", "IS NOT NULL", "IN", "NOT IN", "LIKE", "ILIKE"):
        op_text = " ".join(_word(draw, w) for w in op.split())
        sep = " "
    else:
        op_text = {"=": draw(st.sampled_from(["=", "=="])), "!=": draw(st.sampled_from(["!=", "<>"]))}.get(
            op, op
        )
        sep = draw(st.sampled_from(["", " ", "  "]))
    if op in ("IS NULL", "IS NOT NULL"):
        return f"{ident} {op_text}"
    if op in ("IN", "NOT IN"):
        items = ",".join(draw(st.sampled_from([" ", ""])) + render_value(draw, v) for v in cmp.value)
        return f"{ident} {op_text} ({items})"
    return f"{ident}{sep}{op_text}{sep}{render_value(draw, cmp.value)}"


def render(draw: Any, expr: Expr) -> str:
    if isinstance(expr, Comparison):
        text = render_comparison(draw, expr)
        return f"({text})" if draw(st.integers(0, 4)) == 0 else text
    joiner = _word(draw, "and" if isinstance(expr, And) else "or")
    parts = []
    for operand in expr.operands:
        text = render(draw, operand)
        # Nested nodes keep their parentheses (the tree is not flattened), except that an
        # AND inside an OR may drop them: precedence must give the same tree.
        needs = not isinstance(operand, Comparison) and not (
            isinstance(expr, Or) and isinstance(operand, And) and draw(st.booleans())
        )
        parts.append(f"({text})" if needs else text)
    return f" {joiner} ".join(parts)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_rendered_expressions_parse_back_to_the_same_tree(data: st.DataObject) -> None:
    expr = data.draw(expressions())
    text = render(data.draw, expr)
    assert parse_filter(text) == expr, text


GRAMMAR_TOKENS = [
    "metrics.acc",
    "params.model",
    "tags.`a b`",
    "status",
    "start_time",
    "(",
    ")",
    ",",
    "AND",
    "or",
    "NOT",
    "IN",
    "IS",
    "NULL",
    "LIKE",
    "=",
    "!=",
    "<",
    ">=",
    "'rf'",
    '"x"',
    "1.5",
    "-3",
    "'",
    "`",
    ".",
    "foo.bar",
    "1e999",
    "\\",
    "%",
]


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(st.text(max_size=60), st.lists(st.sampled_from(GRAMMAR_TOKENS), max_size=12).map(" ".join))
)
def test_garbage_raises_invalid_argument_and_nothing_else(text: str) -> None:
    try:
        parse_filter(text)
    except InvalidArgument as exc:
        assert "Invalid filter" in str(exc) or "NUL" in str(exc)
    try:
        parse_order_by(text)
    except InvalidArgument:
        pass


def test_deep_nesting_is_refused_cleanly() -> None:
    with pytest.raises(InvalidArgument, match="nested deeper"):
        parse_filter("(" * 500 + "metrics.a > 1" + ")" * 500)
    with pytest.raises(InvalidArgument, match="limit"):
        parse_filter("metrics.a > 1 or " * 10_000 + "metrics.a > 1")
    with pytest.raises(InvalidArgument, match="more than 200 comparisons"):
        parse_filter(" or ".join(["metrics.a > 1"] * 201))
    with pytest.raises(InvalidArgument, match="more than 10000 values"):
        parse_filter("params.a IN (" + ", ".join(["'x'"] * 10_002) + ")")
    assert len(parse_filter(" or ".join(["metrics.a > 1"] * 200)).operands) == 200  # type: ignore[union-attr]


def test_the_largest_accepted_filters_run_on_the_database(store: SqlStore) -> None:
    exp_id = store.create_experiment("big", "/tmp/big")
    wide = " or ".join(f"metrics.m{i} > {i}" for i in range(199))
    deep = "(" * 100 + "metrics.a > 1" + ")" * 100
    many = "params.p IN (" + ", ".join(f"'{i}'" for i in range(10_000)) + ")"
    for text in (wide + " or metrics.x > 0", deep, many, f"({wide}) and {many}"):
        assert list(store.search_runs([exp_id], text)) == []


# ======================================================== search_runs on a database


@dataclass
class Seeded:
    store: SqlStore
    experiment_id: str
    ids: dict[str, str]  # run name -> run id

    def names(self, filter_string: str = "", **kwargs: Any) -> set[str]:
        kwargs.setdefault("max_results", 50_000)
        return {
            r.info.run_name for r in self.store.search_runs([self.experiment_id], filter_string, **kwargs)
        }

    def ordered(self, order_by: list[str], filter_string: str = "", **kwargs: Any) -> list[str]:
        return [
            r.info.run_name
            for r in self.store.search_runs([self.experiment_id], filter_string, order_by=order_by, **kwargs)
        ]


RUNS: list[dict[str, Any]] = [
    dict(
        name="alpha",
        user="ada",
        status=RunStatus.FINISHED,
        end=T0 + 10,
        metrics={"acc": 0.95, "loss": 0.1},
        params={"model": "rf", "lr": "0.1"},
        tags={"team": "risk", "key with space": "x"},
    ),
    dict(
        name="beta",
        user="bob",
        status=RunStatus.FAILED,
        end=None,
        metrics={"acc": 0.8, "loss": math.nan},
        params={"model": "lr", "lr": "0.01"},
        tags={"team": "Risk"},
    ),
    dict(
        name="gamma",
        user="ada",
        status=RunStatus.RUNNING,
        end=None,
        metrics={"acc": math.nan},
        params={"model": "rf"},
        tags={"team": "fraud%"},
    ),
    dict(
        name="delta",
        user="carol",
        status=RunStatus.FINISHED,
        end=T0 + 20,
        metrics={"acc": math.inf, "loss": -1.0},
        params={"model": "svm", "lr": "0.1"},
        tags={},
    ),
    dict(
        name="epsilon",
        user="bob",
        status=RunStatus.KILLED,
        end=T0 + 5,
        metrics={"loss": 0.0},
        params={"model": "RF"},
        tags={"team": "risk_", "key with space": "it's"},
    ),
    dict(
        name="zeta",
        user="ada",
        status=RunStatus.FINISHED,
        end=T0 + 6,
        metrics={"acc": 0.99},
        params={"model": "rf"},
        tags={"team": "risk"},
        deleted=True,
    ),
]


def seed(store: SqlStore) -> Seeded:
    exp_id = store.create_experiment("search", "s3://bucket/search")
    other = store.create_experiment("other", "/tmp/other")
    ids: dict[str, str] = {}
    for i, spec in enumerate(RUNS):
        run = store.create_run(exp_id, user_id=spec["user"], start_time=T0 + i, run_name=spec["name"])
        run_id = run.info.run_id
        ids[spec["name"]] = run_id
        store.log_batch(
            run_id,
            metrics=[Metric(k, v, T0, 0) for k, v in spec["metrics"].items()],
            params=[Param(k, v) for k, v in spec["params"].items()],
            tags=[RunTag(k, v) for k, v in spec["tags"].items()],
        )
        if spec["status"] is not RunStatus.RUNNING:
            store.update_run_info(run_id, status=spec["status"], end_time=spec["end"])
        if spec.get("deleted"):
            store.delete_run(run_id)
    # A run in another experiment that matches almost everything: it must never show up.
    stranger = store.create_run(other, user_id="ada", start_time=T0, run_name="stranger").info.run_id
    store.log_batch(
        stranger,
        metrics=[Metric("acc", 0.95, T0, 0)],
        params=[Param("model", "rf")],
        tags=[RunTag("team", "risk")],
    )
    return Seeded(store, exp_id, ids)


@pytest.fixture
def seeded(store: SqlStore) -> Seeded:
    return seed(store)


ACTIVE = {"alpha", "beta", "gamma", "delta", "epsilon"}

CASES = [
    # metrics: NaN matches only != / NOT IN; inf compares as infinity; missing never matches
    ("metrics.acc > 0.9", {"alpha", "delta"}),
    ("metrics.acc >= 0.8", {"alpha", "beta", "delta"}),
    ("metrics.acc < 0.9", {"beta"}),
    ("metrics.acc <= 0.95", {"alpha", "beta"}),
    ("metrics.acc = 0.95", {"alpha"}),
    ("metrics.acc != 0.95", {"beta", "gamma", "delta"}),
    ("metrics.acc > 1e308", {"delta"}),
    ("metrics.loss = 0", {"epsilon"}),
    ("metrics.loss != 0", {"alpha", "beta", "delta"}),
    ("metrics.loss < 0.5", {"alpha", "delta", "epsilon"}),
    ("metrics.acc IN (0.8, 0.95)", {"alpha", "beta"}),
    ("metrics.acc NOT IN (0.8)", {"alpha", "gamma", "delta"}),
    # integers first in a list of floats: every value is bound as a float (PostgreSQL once
    # typed the list by its first item, turning 0.1 into 0 and overflowing on 1e308)
    ("metrics.acc IN (-1, 0.1)", set()),
    ("metrics.acc IN (1, 0.95)", {"alpha"}),
    ("metrics.acc IN (-1, 1e308)", set()),
    ("metrics.acc > 3000000000", {"delta"}),
    ("metrics.acc IS NULL", {"epsilon"}),
    ("metrics.loss IS NOT NULL", {"alpha", "beta", "delta", "epsilon"}),
    # params
    ("params.model = 'rf'", {"alpha", "gamma"}),
    ("params.model != 'rf'", {"beta", "delta", "epsilon"}),
    ("params.model LIKE 'r%'", {"alpha", "gamma"}),
    ("params.model ILIKE 'r%'", {"alpha", "gamma", "epsilon"}),
    ("params.model LIKE '_f'", {"alpha", "gamma"}),
    ("params.model IN ('lr', 'svm')", {"beta", "delta"}),
    ("params.model NOT IN ('lr', 'svm')", {"alpha", "gamma", "epsilon"}),
    ("params.lr IS NULL", {"gamma", "epsilon"}),
    ("params.lr IS NOT NULL", {"alpha", "beta", "delta"}),
    # tags: case, LIKE escapes, quoted keys
    ("tags.team = 'risk'", {"alpha"}),
    ("tags.team LIKE 'risk%'", {"alpha", "epsilon"}),
    ("tags.team ILIKE 'risk'", {"alpha", "beta"}),
    ("tags.team LIKE 'risk\\_'", {"epsilon"}),
    ("tags.team LIKE '%\\%'", {"gamma"}),
    ("tags.team LIKE 'fraud%%'", {"gamma"}),
    ("tags.`key with space` = 'x'", {"alpha"}),
    ("tags.\"key with space\" = 'it''s'", {"epsilon"}),
    ("tags.team IS NULL", {"delta"}),
    ("tags.`mlflow.runName` = 'beta'", {"beta"}),
    ("tags.mlflow.user = 'carol'", {"delta"}),
    # attributes
    ("status = 'FINISHED'", {"alpha", "delta"}),
    ("attributes.status != 'FINISHED'", {"beta", "gamma", "epsilon"}),
    ("status IN ('FAILED', 'KILLED')", {"beta", "epsilon"}),
    ("status LIKE 'F%'", {"alpha", "beta", "delta"}),
    ("status ILIKE 'finished'", {"alpha", "delta"}),
    ("run_name = 'gamma'", {"gamma"}),
    ("attributes.run_name LIKE '%ta'", {"beta", "delta"}),
    ("user_id = 'bob'", {"beta", "epsilon"}),
    ("start_time >= 1700000000003", {"delta", "epsilon"}),
    ("created < 1700000000001", {"alpha"}),
    ("end_time IS NULL", {"beta", "gamma"}),
    ("end_time > 1700000000006", {"alpha", "delta"}),
    ("artifact_uri LIKE 's3://bucket/search/%'", ACTIVE),
    ("lifecycle_stage = 'active'", ACTIVE),
    # OR, AND, parentheses and precedence
    ("metrics.acc > 0.9 and params.model = 'rf'", {"alpha"}),
    ("metrics.acc > 0.9 or params.model = 'rf'", {"alpha", "gamma", "delta"}),
    ("params.model = 'svm' or metrics.acc > 0.9 and params.model = 'rf'", {"alpha", "delta"}),
    ("(params.model = 'svm' or metrics.acc > 0.9) and params.model = 'rf'", {"alpha"}),
    (
        "(status = 'FAILED' or status = 'KILLED') and (tags.team ILIKE 'RISK%' or metrics.loss = 0)",
        {"beta", "epsilon"},
    ),
    ("user_id = 'ada' And (end_time IS NULL Or metrics.acc > 0.99)", {"gamma"}),
]


def test_every_operator_on_every_entity(seeded: Seeded) -> None:
    # One seeded database for all cases (a database per case would be slow); every
    # mismatch is reported at once.
    failures = []
    for filter_string, expected in CASES:
        got = seeded.names(filter_string)
        if got != expected:
            failures.append(f"{filter_string!r}: got {sorted(got)}, expected {sorted(expected)}")
    assert not failures, "\n".join(failures)


def test_run_id_filters_and_view_types(seeded: Seeded) -> None:
    ids = seeded.ids
    assert seeded.names(f"run_id IN ('{ids['alpha']}', '{ids['beta']}')") == {"alpha", "beta"}
    assert seeded.names(f"attributes.run_id = '{ids['gamma']}'") == {"gamma"}
    assert seeded.names(f"run_id NOT IN ('{ids['gamma']}')") == ACTIVE - {"gamma"}
    assert seeded.names("", run_view_type=ViewType.DELETED_ONLY) == {"zeta"}
    assert seeded.names("params.model = 'rf'", run_view_type=ViewType.ALL) == {"alpha", "gamma", "zeta"}
    assert seeded.names("lifecycle_stage = 'deleted'", run_view_type=ViewType.ALL) == {"zeta"}
    store = seeded.store
    both = store.search_runs(
        [seeded.experiment_id, store.get_experiment_by_name("other").experiment_id],  # type: ignore[union-attr]
        "params.model = 'rf'",
    )
    assert {r.info.run_name for r in both} == {"alpha", "gamma", "stranger"}
    assert len(store.search_runs([], "")) == 0
    with pytest.raises(InvalidArgument, match="view type"):
        store.search_runs([seeded.experiment_id], run_view_type="SOME")  # type: ignore[arg-type]


def test_search_returns_full_runs(seeded: Seeded) -> None:
    [run] = seeded.store.search_runs([seeded.experiment_id], "run_name = 'beta'")
    assert run == seeded.store.get_run(seeded.ids["beta"])
    assert run.data.params == {"model": "lr", "lr": "0.01"}
    assert run.data.metrics["acc"] == 0.8 and math.isnan(run.data.metrics["loss"])


def test_key_value_searches_return_every_run_field(store: SqlStore) -> None:
    """Runs found through key/value filters (read from SQLite's search index) carry every
    field get_run returns: parent, Prefect ids, end time, status, in either order."""
    exp_id = store.create_experiment("fields", "s3://bucket/fields")
    parent = store.create_run(exp_id, user_id="ada", start_time=T0, run_name="parent")
    child = store.create_run(
        exp_id, user_id="bob", start_time=T0 + 1, run_name="child", parent_run_id=parent.info.run_id,
        prefect_flow_run_id="flow-run-1", prefect_task_run_id="task-run-1",
    )
    for run, acc in ((parent, 0.5), (child, 0.7)):
        store.log_batch(run.info.run_id, metrics=[Metric("acc", acc, T0, 0)], params=[Param("model", "rf")])
    store.update_run_info(child.info.run_id, status=RunStatus.FAILED, end_time=T0 + 9)
    expected = [store.get_run(child.info.run_id), store.get_run(parent.info.run_id)]
    for text in ("params.model = 'rf'", "metrics.acc > 0.1 and params.model = 'rf'", "tags.mlflow.user LIKE '%'"):
        assert list(store.search_runs([exp_id], text)) == expected, text
        assert list(store.search_runs([exp_id], text, order_by=["metrics.acc"])) == expected[::-1], text
    assert expected[0].info.prefect_task_run_id == "task-run-1" and expected[0].info.end_time == T0 + 9


def test_order_by(seeded: Seeded) -> None:
    # Default: newest first.
    assert seeded.ordered([]) == ["epsilon", "delta", "gamma", "beta", "alpha"]
    # Metrics: NaN after real values, missing last, in both directions.
    assert seeded.ordered(["metrics.acc DESC"]) == ["delta", "alpha", "beta", "gamma", "epsilon"]
    assert seeded.ordered(["metrics.acc"]) == ["beta", "alpha", "delta", "gamma", "epsilon"]
    # Strings sort by code point on both databases; ties fall back to start_time DESC.
    assert seeded.ordered(["params.model ASC"]) == ["epsilon", "beta", "gamma", "alpha", "delta"]
    assert seeded.ordered(["params.lr DESC", "attributes.start_time ASC"]) == [
        "alpha",
        "delta",
        "beta",
        "gamma",
        "epsilon",
    ]
    assert seeded.ordered(["tags.team"]) == ["beta", "gamma", "alpha", "epsilon", "delta"]
    assert seeded.ordered(["end_time DESC"]) == ["delta", "alpha", "epsilon", "gamma", "beta"]
    assert seeded.ordered(["attributes.run_name"]) == ["alpha", "beta", "delta", "epsilon", "gamma"]
    assert seeded.ordered(["metrics.loss DESC"], "metrics.loss IS NOT NULL") == [
        "alpha",
        "epsilon",
        "delta",
        "beta",
    ]
    with pytest.raises(InvalidArgument, match="twice"):
        seeded.ordered(["metrics.acc", "metric.acc DESC"])
    with pytest.raises(InvalidArgument, match="order_by"):
        seeded.ordered(["metrics.acc sideways"])


def test_pages_concatenate_to_the_full_result(seeded: Seeded) -> None:
    store = seeded.store
    for page_size, order_by in itertools.product(
        (1, 2, 3, 5), (None, ["metrics.acc DESC"], ["params.model", "tags.team DESC"])
    ):
        full = [r.info.run_id for r in store.search_runs([seeded.experiment_id], order_by=order_by)]
        pages: list[str] = []
        token = None
        for _ in range(20):
            page = store.search_runs(
                [seeded.experiment_id], max_results=page_size, order_by=order_by, page_token=token
            )
            assert len(page) <= page_size
            pages.extend(r.info.run_id for r in page)
            token = page.token
            if token is None:
                break
        assert pages == full and len(set(pages)) == len(pages) == 5


def test_bad_paging_arguments(seeded: Seeded) -> None:
    store = seeded.store
    for bad in (0, -1, 50_001, 1.5, "10", True):
        with pytest.raises(InvalidArgument, match="max_results"):
            store.search_runs([seeded.experiment_id], max_results=bad)  # type: ignore[arg-type]
    for token in ("garbage", "{}", encode_page_token(-5)):
        with pytest.raises(InvalidArgument, match="page_token"):
            store.search_runs([seeded.experiment_id], page_token=token)
    with pytest.raises(InvalidArgument, match="experiment id"):
        store.search_runs(["one"])
    page = store.search_runs([seeded.experiment_id], page_token=encode_page_token(100))
    assert list(page) == [] and page.token is None


def test_long_param_values_compare_exactly(store: SqlStore) -> None:
    """PostgreSQL indexes only a 200-char prefix; equality must still compare whole values."""
    exp_id = store.create_experiment("long", "/tmp/long")
    prefix = "p" * 5000
    ids = {}
    for suffix in ("a", "b"):
        run_id = store.create_run(exp_id, user_id="u", start_time=T0, run_name=suffix).info.run_id
        store.log_batch(
            run_id, params=[Param("blob", prefix + suffix)], tags=[RunTag("blob", prefix + suffix * 2)]
        )
        ids[suffix] = run_id
    names = lambda f: {r.info.run_name for r in store.search_runs([exp_id], f)}  # noqa: E731
    assert names(f"params.blob = '{prefix}b'") == {"b"}
    assert names(f"params.blob IN ('{prefix}a', 'zzz')") == {"a"}
    assert names(f"tags.blob = '{prefix}aa'") == {"a"}
    assert names(f"params.blob != '{prefix}a'") == {"b"}
    assert names("params.blob LIKE '%b'") == {"b"}


# ------------------------------------------ property test: SQL == Python reference


def _like_regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    out, chars = [], iter(pattern)
    for char in chars:
        if char == "\\":
            out.append(re.escape(next(chars, "\\")))
        elif char == "%":
            out.append(".*")
        elif char == "_":
            out.append(".")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _lookup(run: Run, cmp: Comparison) -> Any:
    if cmp.entity_type == "metric":
        return run.data.metrics.get(cmp.key)
    if cmp.entity_type == "param":
        return run.data.params.get(cmp.key)
    if cmp.entity_type == "tag":
        return run.data.tags.get(cmp.key)
    info = run.info
    return {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "status": info.status.value,
        "user_id": info.user_id,
        "artifact_uri": info.artifact_uri,
        "lifecycle_stage": info.lifecycle_stage.value,
        "start_time": info.start_time,
        "end_time": info.end_time,
    }[cmp.key]


def reference(run: Run, expr: Expr) -> bool:
    """What a filter means, in plain Python (the module docstring of tracking_plugin.search)."""
    if isinstance(expr, And):
        return all(reference(run, e) for e in expr.operands)
    if isinstance(expr, Or):
        return any(reference(run, e) for e in expr.operands)
    value, op, want = _lookup(run, expr), expr.op, expr.value
    if op == "IS NULL":
        return value is None
    if op == "IS NOT NULL":
        return value is not None
    if value is None:
        return False
    if op in ("LIKE", "ILIKE"):
        return _like_regex(str(want), op == "ILIKE").fullmatch(value) is not None
    if op == "IN":
        return any(value == w for w in want)
    if op == "NOT IN":
        return not any(value == w for w in want)
    return {
        "=": value == want,
        "!=": value != want,
        "<": value < want,
        "<=": value <= want,
        ">": value > want,
        ">=": value >= want,
    }[op]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_search_agrees_with_a_python_reference(seeded: Seeded, data: st.DataObject) -> None:
    store = seeded.store
    all_runs = list(store.search_runs([seeded.experiment_id], run_view_type=ViewType.ALL))
    expr = data.draw(expressions(tuple(seeded.ids.values())))
    text = render(data.draw, expr)
    view = data.draw(st.sampled_from(list(ViewType)))
    expected = {
        r.info.run_name
        for r in all_runs
        if reference(r, expr)
        and (
            view is ViewType.ALL
            or (r.info.lifecycle_stage.value == "active") == (view is ViewType.ACTIVE_ONLY)
        )
    }
    # Small pages make the SQLite planner walk runs and probe each one; large pages make it
    # start from the matching rows: both plans must give the same answer.
    page_size = data.draw(st.sampled_from([1, 2, 1000]))
    got: list[str] = []
    token = None
    while True:
        page = store.search_runs(
            [seeded.experiment_id], text, run_view_type=view, max_results=page_size, page_token=token
        )
        got.extend(r.info.run_name for r in page)
        token = page.token
        if token is None:
            break
    assert len(got) == len(set(got)), text
    assert set(got) == expected, text
