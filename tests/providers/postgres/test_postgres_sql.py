"""The PostgreSQL statement loader: conditional parts and their variants. The server
test prepares every variant of every statement, so a part that leaves broken SQL
behind fails here even when no conformance case happens to need that combination."""

from __future__ import annotations

import os
import uuid

import pytest

pytest.importorskip("psycopg")

from duroxy.providers.postgres import _sql

BODY = """
SELECT 1 AS one
-- if: a
, %(x)s AS x
-- end
-- unless: a
, NULL AS x
-- end
-- if: b
, %(y)s AS y
-- end
"""


def test_every_combination_of_flags_is_compiled_with_only_its_parameters() -> None:
    assert _sql._flags("s", BODY) == ("a", "b")
    texts = {on: _sql._compact("s", _sql._select(BODY, on))
             for on in (frozenset(), frozenset("a"), frozenset("b"), frozenset("ab"))}
    assert texts[frozenset()].raw == b"SELECT 1 AS one , NULL AS x"
    assert texts[frozenset()].params == ()
    assert texts[frozenset("a")].raw == b"SELECT 1 AS one , $1 AS x"
    assert texts[frozenset("b")].raw == b"SELECT 1 AS one , NULL AS x , $1 AS y"
    assert texts[frozenset("b")].params == ("y",)
    assert texts[frozenset("ab")].params == ("x", "y")


@pytest.mark.parametrize("bad, problem", [
    ("SELECT 1\n-- if: a\n, 2\n", "has no '-- end'"),
    ("SELECT 1\n-- end\n", "'-- end' without"),
    ("SELECT 1\n-- if: a\n-- if: b\n-- end\n-- end\n", "inside part"),
])
def test_malformed_parts_are_refused(bad: str, problem: str) -> None:
    with pytest.raises(RuntimeError, match=problem):
        _sql._flags("s", bad)


def test_turn_statements_have_a_variant_per_combination_of_parts() -> None:
    q = _sql.load_statements("duroxy")
    parts = frozenset({"starts", "msgs", "works", "cancels", "kv"})
    for name, extra in (("ack_turn", frozenset()), ("commit_turn", frozenset({"consume"}))):
        count = 2 ** len(parts | extra)
        variants = q.variants(name)
        assert len(variants) == count
        assert len({v.raw for v in variants}) == count
        assert q[name] is q.variant(name, parts | extra)
        lean = q.variant(name, frozenset())
        assert b"INSERT INTO activity_queue" not in lean.raw
        assert b"INSERT INTO orchestrator_queue" not in lean.raw
        # a turn that changes no key-value state carries no statement part for it
        assert b"kv" not in lean.raw.replace(b"kv_base", b"")
        assert "work_keys" not in lean.params and "msg_keys" not in lean.params
        full = q[name]
        assert {"work_keys", "msg_keys", "start_keys", "cancel_keys"} <= set(full.params)
        # flags the statement does not have are ignored
        assert q.variant(name, frozenset({"works", "nonsense"})) is \
            q.variant(name, frozenset({"works"}))
    # ack_turn consumes the messages its lease delivered; commit_turn only the timers
    # it fires in place (part consume)
    assert b"DELETE FROM orchestrator_queue" in q["ack_turn"].raw
    assert b"DELETE FROM orchestrator_queue" not in q.variant("commit_turn", parts).raw
    assert b"DELETE FROM orchestrator_queue" in q.variant("commit_turn", frozenset({"consume"})).raw
    assert "consume" not in q.variant("commit_turn", parts).params
    # statements without parts have just themselves
    assert q.variants("renew_orchestration") == [q["renew_orchestration"]]


DSN = os.environ.get("DUROXY_TEST_PG_DSN")


@pytest.mark.postgres
def test_every_variant_of_every_statement_prepares_on_the_server() -> None:
    if not DSN:
        pytest.skip("DUROXY_TEST_PG_DSN not set: PostgreSQL tests need a server")
    import psycopg
    from psycopg import pq, sql

    schema = f"t_{uuid.uuid4().hex[:12]}"
    q = _sql.load_statements(schema)
    with psycopg.connect(DSN, autocommit=True) as conn:
        try:
            for m in _sql.load_migrations(schema):
                conn.execute(b"CREATE SCHEMA IF NOT EXISTS "
                             + sql.Identifier(schema).as_bytes(conn))
                conn.execute(m.script)
            conn.execute(b"SET search_path = " + sql.Identifier(schema).as_bytes(conn))
            prepared = 0
            for name in q:
                for i, st in enumerate(q.variants(name)):
                    res = conn.pgconn.prepare(f"{name}_{i}".encode(), st.raw)
                    assert res.status == pq.ExecStatus.COMMAND_OK, (
                        name, i, res.error_message.decode())
                    prepared += 1
            assert prepared == sum(len(q.variants(n)) for n in q)
            # turns: 32 variants, commit_turn 64 (consume); both abandons (undo) and
            # the orchestration fetch (skip): 2; the activity fetch: 16 (parts plain,
            # tags, routed, sessions)
            assert prepared == len(q) + 31 + 63 + 3 + 15
        finally:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(schema)))


# ------------------------------------------------------------------ typed array parameters
def test_array_parameters_are_sent_as_the_type_their_cast_names() -> None:
    from duroxy.providers.postgres import _arrays

    st = _sql._compact("s", "SELECT %(ids)s::text[], %(n)s::int[], %(k)s::bytea[], "
                            "%(due)s::float8[], %(x)s, %(ids)s::text[], %(odd)s::numeric[]")
    assert st.params == ("ids", "n", "k", "due", "x", "odd")
    args = st.args({"ids": ["a"], "n": [1, 2], "k": [b"\x00"], "due": [None, 1.5],
                    "x": [3], "odd": [1]})
    assert [type(a) for a in args] == [_arrays.TextArray, _arrays.IntArray,
                                       _arrays.ByteaArray, _arrays.Float8Array, list, list]
    assert args[:4] == [["a"], [1, 2], [b"\x00"], [None, 1.5]]
    # NULL stays NULL; a statement without array casts passes its values as they are
    assert st.args({"ids": None, "n": None, "k": None, "due": None, "x": None,
                    "odd": None}) == [None] * 6
    plain = _sql._compact("p", "SELECT %(a)s, %(b)s::text")
    assert plain.arrays == () and plain.args({"a": [1], "b": "t"}) == [[1], "t"]
    # the same parameter cast to two types is left to psycopg
    both = _sql._compact("b", "SELECT %(a)s::text[], %(a)s::int[]")
    assert both.args({"a": [1]}) == [[1]] and type(both.args({"a": [1]})[0]) is list


@pytest.mark.postgres
def test_typed_arrays_round_trip_through_the_server() -> None:
    if not DSN:
        pytest.skip("DUROXY_TEST_PG_DSN not set: PostgreSQL tests need a server")
    import psycopg
    from psycopg.types.array import ListBinaryDumper
    from psycopg.types.string import StrBinaryDumper

    from duroxy.providers.postgres import _arrays

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.adapters.register_dumper(str, StrBinaryDumper)
        conn.adapters.register_dumper(list, ListBinaryDumper)
        _arrays.register(conn)
        values = [_arrays.TextArray(["a", None, "ü\\\"{}", ""]),
                  _arrays.IntArray([1, None, -7]),
                  _arrays.ByteaArray([b"\x00\xff", None]),
                  _arrays.Float8Array([None, 1.25]),
                  _arrays.TextArray([])]
        if not hasattr(psycopg, "RawCursor"):
            pytest.skip("psycopg before 3.2 has no raw cursor")
        # pg_typeof of a bare parameter names the type the client sent
        row = psycopg.RawCursor(conn).execute(
            "SELECT $1::text[], $2::int[], $3::bytea[], $4::float8[], $5::text[], "
            "pg_typeof($1)::text, pg_typeof($2)::text, pg_typeof($3)::text, "
            "pg_typeof($4)::text", values, binary=True).fetchone()
        assert row is not None
        assert list(row[:5]) == [["a", None, "ü\\\"{}", ""], [1, None, -7],
                                 [b"\x00\xff", None], [None, 1.25], []]
        assert list(row[5:]) == ["text[]", "bigint[]", "bytea[]", "double precision[]"]
        # beyond int4: the server's cast refuses it, nothing is sent wrapped
        with pytest.raises(psycopg.errors.NumericValueOutOfRange):
            psycopg.RawCursor(conn).execute("SELECT $1::int[]", [_arrays.IntArray([2**40])],
                                            binary=True)
        assert psycopg.RawCursor(conn).execute(
            "SELECT $1::bigint[]", [_arrays.IntArray([2**40])], binary=True
        ).fetchone() == ([2**40],)
        with pytest.raises((OverflowError, psycopg.DataError)):
            psycopg.RawCursor(conn).execute("SELECT $1::bigint[]", [_arrays.IntArray([2**70])],
                                            binary=True)
