"""``Store.save_batch`` hands its rows to the driver's ``executemany`` itself (the statement
compiled once, each column's bind processor applied as SQLAlchemy would): the rows it stores must
be exactly those a plain SQLAlchemy ``insert`` stores, on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select

from ecap.records import ImageRef, Instruction, Pair, SampleError, Score
from ecap.store import Store
from ecap.store.schema import RECORD_TABLES, Edge, SampleFailure, SampleResult
from ecap.store.store import CompletedSample, record_row


def records() -> list[Any]:
    image = ImageRef(uri="/data/a.png", sha256="a" * 64, width=8, height=8, format="PNG")
    other = ImageRef(uri="/data/b.png", sha256="b" * 64, width=8, height=8, format="PNG")
    pair = Pair.of(image, other, category="add", meta={"row": 2, "note": "é"})
    instruction = Instruction(pair_id=pair.id, text="Add a hat.", origin="model", author="m")
    score = Score(
        pair_id=pair.id, instruction_id=instruction.id, scorer="s", values={"overall": 7.5}
    )
    return [pair, instruction, score]


def rows_of(store: Store, table: Any, skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The table's rows as the driver returns them (SQLite: the stored text of JSON and times)."""
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"SELECT * FROM {table.__tablename__}").mappings().all()
    return sorted(
        ({k: v for k, v in row.items() if k not in skip} for row in rows), key=lambda r: str(r)
    )


def test_save_batch_stores_the_rows_a_plain_insert_stores(store_url, tmp_path):
    store = Store(store_url)
    made = records()
    failure = SampleError(error_type="ImageError", message="bad file")
    store.save_batch(
        "step-run",
        "step-key",
        "captions",
        [CompletedSample("cache-1", "input-1", [{r.record_type: r.id for r in made}])],
        [("input-2", failure)],
        made,
    )
    written = {
        "pair": rows_of(store, RECORD_TABLES["pair"]),
        "instruction": rows_of(store, RECORD_TABLES["instruction"]),
        "score": rows_of(store, RECORD_TABLES["score"]),
        "edges": rows_of(store, Edge, skip=("id",)),
        "results": rows_of(store, SampleResult),
        "failures": rows_of(store, SampleFailure, skip=("id",)),
    }
    with store.engine.connect() as conn:
        moment = conn.execute(select(SampleResult.created_at)).scalar_one()
    store.close()

    twin_url = f"sqlite:///{tmp_path / 'twin.db'}" if "sqlite" in store_url else store_url
    twin = Store(twin_url)
    with twin._writes.begin() as conn:  # the rows as SQLAlchemy's own insert writes them
        for table in (*RECORD_TABLES.values(), Edge, SampleResult, SampleFailure):
            conn.execute(table.__table__.delete())  # type: ignore[attr-defined]
        for record in made:
            table = RECORD_TABLES[record.record_type]
            conn.execute(insert(table), [record_row(record, "step-run", moment)])
        conn.execute(
            insert(Edge),
            [
                {
                    "src_type": r.record_type,
                    "src_id": r.id,
                    "verb": e.verb,
                    "dst_type": e.target_type,
                    "dst_id": e.target_id,
                    "step_run_id": "step-run",
                }
                for r in made
                for e in r.lineage()
            ],
        )
        conn.execute(
            insert(SampleResult),
            [
                {
                    "cache_key": "cache-1",
                    "step_key": "step-key",
                    "input_key": "input-1",
                    "outputs": [{r.record_type: r.id for r in made}],
                    "step_run_id": "step-run",
                    "created_at": moment,
                }
            ],
        )
        conn.execute(
            insert(SampleFailure),
            [
                {
                    "step_run_id": "step-run",
                    "step_id": "captions",
                    "input_key": "input-2",
                    "error_type": "ImageError",
                    "message": "bad file",
                    "created_at": moment,
                }
            ],
        )
    expected = {
        "pair": rows_of(twin, RECORD_TABLES["pair"]),
        "instruction": rows_of(twin, RECORD_TABLES["instruction"]),
        "score": rows_of(twin, RECORD_TABLES["score"]),
        "edges": rows_of(twin, Edge, skip=("id",)),
        "results": rows_of(twin, SampleResult),
        "failures": rows_of(twin, SampleFailure, skip=("id",)),
    }
    assert written == expected
    assert len(written["edges"]) == sum(len(r.lineage()) for r in made) > 0
    assert {r.id: r for r in made} == {
        **twin.records("pair", [made[0].id]),
        **twin.records("instruction", [made[1].id]),
        **twin.records("score", [made[2].id]),
    }
    twin.close()


def test_a_record_saved_twice_keeps_its_first_row_and_adds_no_edges(store_url):
    store = Store(store_url)
    made = records()
    store.save_batch("first", "k", "s", [], [], made)
    store.save_batch("second", "k", "s", [], [], made)
    assert {row["step_run_id"] for row in rows_of(store, RECORD_TABLES["instruction"])} == {"first"}
    assert {row["step_run_id"] for row in rows_of(store, Edge, skip=("id",))} == {"first"}
    store.close()
