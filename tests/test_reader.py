"""Readers: read-only checks and parameter inlining for the Quack path."""

import datetime as dt

import pytest

from storage.reader import QueryError, ReadOnlyError, check_read_only, inline_params


def test_placeholders_in_strings_and_comments_are_left_alone():
    sql = "SELECT '?', \"a?b\" -- it's a ? here\n FROM t /* don't ? */ WHERE x = ? AND y = ?"
    out = inline_params(sql, ["o'k", dt.datetime(2026, 11, 26, 12, 0)])
    assert out.endswith("WHERE x = 'o''k' AND y = TIMESTAMP '2026-11-26 12:00:00'")
    assert "-- it's a ? here\n" in out and "/* don't ? */" in out


def test_placeholder_count_must_match():
    with pytest.raises(QueryError, match="more \\? placeholders"):
        inline_params("SELECT ?, ?", [1])
    with pytest.raises(QueryError, match="more parameters"):
        inline_params("SELECT ?", [1, 2])


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM gpus",
        "SELECT 1; DROP TABLE gpus",
        "COPY gpus TO 'x.csv'",
        "ATTACH 'x.duckdb'",
        "SET threads = 1",
    ],
)
def test_only_single_selects_pass(sql):
    with pytest.raises(ReadOnlyError):
        check_read_only(sql)


def test_selects_pass():
    for sql in (
        "SELECT 1",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "EXPLAIN SELECT 1",
        "FROM gpus",
    ):
        check_read_only(sql)
