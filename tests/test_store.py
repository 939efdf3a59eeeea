"""The store behaves the same on SQLite and on PostgreSQL (a real server: marker ``postgres``)."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, create_engine, inspect, text

from ecap.errors import StoreError
from ecap.provenance import query, walk
from ecap.records import Dataset, ImageRef, Instruction, Item, Pair, SampleError, Score
from ecap.store import Store
from ecap.store.migrate import HEAD_REVISION, VERSION_ROW, create_on, upgrade
from ecap.store.schema import Base
from ecap.store.store import CompletedSample
from ecap.store.tables import metadata
from ecap.testing import start_step_run


def a_pair(n: int) -> Pair:
    return Pair.of(
        ImageRef(uri=f"/img/{n}-a.png", sha256=f"{n:064x}"),
        ImageRef(uri=f"/img/{n}-b.png", sha256=f"{n + 1:064x}"),
        category="add",
    )


def started(store: Store, step_id: str = "pairs") -> str:
    return start_step_run(store, step_id=step_id, config={"path": "x"})


def schema_of(conn: Connection) -> dict[str, Any]:
    """Everything the database says about its tables: columns, keys, indexes, constraints.
    Columns are compared as a set: a migration that adds one puts it last."""
    seen = inspect(conn)
    return {
        table: {
            "columns": sorted(
                (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                for c in seen.get_columns(table)
            ),
            "primary key": seen.get_pk_constraint(table),
            "foreign keys": sorted(seen.get_foreign_keys(table), key=repr),
            "indexes": sorted(seen.get_indexes(table), key=repr),
            "unique": sorted(seen.get_unique_constraints(table), key=repr),
            "checks": sorted(seen.get_check_constraints(table), key=repr),
        }
        for table in sorted(seen.get_table_names())
    }


def test_a_new_store_has_the_schema_its_migrations_build(store_url):
    """A new store is created from the table definitions in one go; an older one is upgraded by
    the migrations. Both must end with the same tables, and those must be the declared ones."""
    engine = create_engine(store_url)
    upgrade(engine, "head")
    with engine.begin() as conn:
        migrated = schema_of(conn)
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        metadata.drop_all(conn)
        VERSION_ROW.drop(conn)
        assert schema_of(conn) == {}
        create_on(conn)
        assert schema_of(conn) == migrated
        assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [
            (HEAD_REVISION,)
        ]
    engine.dispose()
    store = Store(store_url)  # opens it as a current store: nothing to create or upgrade
    assert store.finished(["k"]) == {}


def test_records_round_trip_and_pairs_are_deduplicated(store_url):
    store = Store(store_url)
    step_run = started(store)
    pair = a_pair(1)
    instruction = Instruction(pair_id=pair.id, text="Add a tree.", origin="human")
    store.save_batch(
        step_run,
        "ecap1:step",
        "pairs",
        [CompletedSample("k1", "row1", [Item(pair=pair, instruction=instruction).refs()])],
        [],
        [pair, instruction],
    )
    again = pair.model_copy(update={"meta": {"row": 99}})
    store.save_batch(
        step_run,
        "ecap1:step",
        "pairs",
        [CompletedSample("k2", "row2", [Item(pair=again).refs()])],
        [],
        [again],
    )

    assert store.finished(["k1", "k2", "k3"]) == {
        "k1": [{"pair": pair.id, "instruction": instruction.id}],
        "k2": [{"pair": pair.id}],
    }
    (item,) = store.hydrate([{"pair": pair.id, "instruction": instruction.id}])
    assert item == Item(pair=pair, instruction=instruction)  # the first import's row is kept
    assert len(query(store, record_type="pair")) == 1


def test_a_record_saved_again_keeps_its_lineage_edges_once(store_url):
    """A later batch or step that hands on a record the store already holds (a preference's
    chosen instruction, a re-imported annotation) adds no second copy of its edges."""
    store = Store(store_url)
    step_run = started(store)
    pair = a_pair(3)
    instruction = Instruction(pair_id=pair.id, text="Add a tree.", origin="model")
    for key in ("k1", "k2"):
        refs = Item(pair=pair, instruction=instruction).refs()
        store.save_batch(
            step_run,
            "ecap1:step",
            "pairs",
            [CompletedSample(key, key, [refs])],
            [],
            [pair, instruction],
        )
    with store.engine.connect() as conn:
        edges = conn.execute(
            text("SELECT verb, dst_type FROM edges WHERE src_id = :id"), {"id": instruction.id}
        ).all()
    assert [tuple(e) for e in edges] == [("wasDerivedFrom", "pair")]


def test_failures_are_recorded_per_sample(store_url):
    store = Store(store_url)
    step_run = started(store)
    store.save_batch(
        step_run,
        "ecap1:step",
        "pairs",
        [],
        [("row7", SampleError(error_type="ImageError", message="bad png"))],
        [],
    )
    (failure,) = store.failures([step_run])
    assert (failure["input_key"], failure["error_type"], failure["message"]) == (
        "row7",
        "ImageError",
        "bad png",
    )
    assert store.finished(["row7"]) == {}


def test_provenance_walks_back_to_origins_and_forward_to_uses(store_url):
    store = Store(store_url)
    step_run = started(store)
    pair = a_pair(2)
    instruction = Instruction(pair_id=pair.id, text="Add a tree.", origin="model")
    score = Score(pair_id=pair.id, instruction_id=instruction.id, scorer="s", values={"v": 8.5})
    dataset = Dataset(name="d", content_hash="ecap1:x", format="jsonl", count=1)
    store.save_batch(
        step_run,
        "ecap1:step",
        "pairs",
        [],
        [],
        [pair, instruction, score, dataset],
        [
            {
                "src_type": "dataset",
                "src_id": dataset.id,
                "verb": "used",
                "dst_type": "instruction",
                "dst_id": instruction.id,
                "step_run_id": step_run,
            }
        ],
    )

    node = walk(store, pair.id[:10])
    assert node["type"] == "pair" and node["generated_by"]["step_id"] == "pairs"
    uses = {(u["verb"], u["type"]) for u in node["uses"]}
    assert uses == {("wasDerivedFrom", "instruction")}  # the score used the instruction
    (from_instruction,) = [u for u in node["uses"] if u["type"] == "instruction"]
    assert {(u["verb"], u["type"]) for u in from_instruction["uses"]} == {
        ("used", "score"),
        ("used", "dataset"),
    }

    back = walk(store, dataset.id)
    assert back["origins"][0]["id"] == instruction.id
    assert back["origins"][0]["origins"][0]["id"] == pair.id

    assert [r["id"] for r in query(store, min_score=8, score_name="v")] == [instruction.id]
    assert query(store, min_score=9, score_name="v") == []
    assert [r["id"] for r in query(store, step="pairs", origin="model")] == [instruction.id]


def test_a_store_from_a_newer_ecap_is_refused(store_url):
    store = Store(store_url)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(StoreError, match="written by a newer ecap"):
        Store(store_url)


def test_an_older_store_is_upgraded_by_writers_and_refused_by_readers(store_url):
    from sqlalchemy import create_engine, inspect

    from ecap.store import migrate

    engine = create_engine(store_url)
    migrate.upgrade(engine, "0001")  # a store written by an older ecap
    engine.dispose()
    with pytest.raises(StoreError, match="ecap db upgrade"):
        Store(store_url, auto_upgrade=False)

    store = Store(store_url)
    assert migrate.current_revision(store.engine) == migrate.head_revision()
    assert "api_calls" in inspect(store.engine).get_table_names()


def test_server_stores_pool_checked_connections_sized_from_the_environment(monkeypatch):
    """Long-lived workers outlive server restarts (pre-ping), and N of them must stay under the
    server's max_connections (pool size from the environment); SQLite keeps its own pool."""
    from sqlalchemy.engine import make_url

    from ecap.store.connect import _pool_options

    monkeypatch.setenv("ECAP_STORE_POOL_SIZE", "2")
    monkeypatch.setenv("ECAP_STORE_MAX_OVERFLOW", "0")
    assert _pool_options(make_url("postgresql+psycopg://u@db/ecap")) == {
        "pool_pre_ping": True,
        "pool_size": 2,
        "max_overflow": 0,
    }
    assert _pool_options(make_url("sqlite:///x.db")) == {}
