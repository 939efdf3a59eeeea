"""The store survives kills, concurrent openers and hostile databases (SQLite and PostgreSQL).

- Creating or migrating a store is one transaction, under a lock: a process killed at any moment
  leaves either no schema or the whole schema, and two processes never migrate at once.
- Reading commands never write: an unrelated or damaged database is refused with a message that
  says what to do, and a store in a missing or read-only folder gives one ``Error:`` line.
- Writers cooperate: saving a sample another writer finished first is not an error.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, text

from ecap.cli import cli
from ecap.errors import StoreError
from ecap.records import ImageRef, Pair
from ecap.store import Store, migrate
from ecap.store.schema import Base
from ecap.store.store import CompletedSample
from ecap.testing import make_pairs, start_step_run

CREATE_STORE = """
import sys
from ecap.store import Store
print("ready", flush=True)
Store(sys.argv[1])
print("created", flush=True)
"""


def a_pair(n: int) -> Pair:
    return Pair.of(
        ImageRef(uri=f"/img/{n}-a.png", sha256=f"{n:064x}"),
        ImageRef(uri=f"/img/{n}-b.png", sha256=f"{n + 1:064x}"),
    )


def start_step(store: Store, step_key: str = "ecap1:step") -> str:
    return start_step_run(store, step_key=step_key)


def assert_complete_store(url: str) -> None:
    """The store opens, has exactly this ecap's schema at the newest revision, and takes writes."""
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert migrate.current_revision(store.engine) == migrate.head_revision()
        pair = a_pair(1)
        store.save_batch(
            start_step(store),
            "ecap1:step",
            "pairs",
            [CompletedSample("k", "r", [{"pair": pair.id}])],
            [],
            [pair],
        )
        assert store.finished(["k"]) == {"k": [{"pair": pair.id}]}
    finally:
        store.close()


def fresh_url(store_url: str, tmp_path: Path, n: int) -> str:
    """Another fresh store next to ``store_url`` (a new file, or a new PostgreSQL database)."""
    if store_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / f'store-{n}.db'}"
    from sqlalchemy.engine import make_url

    base = make_url(store_url)
    name = f"{base.database}_{n}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def drop_fresh(url: str) -> None:
    if url.startswith("sqlite"):
        return
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{parsed.database}" WITH (FORCE)'))
    admin.dispose()


# -- creation and migration -------------------------------------------------------------------


def test_a_process_killed_while_creating_a_store_never_breaks_later_runs(
    store_url, tmp_path, monkeypatch, write_spec
):
    """SIGKILL the creator at 0 to 100 ms into creating the store: the next run completes."""
    monkeypatch.chdir(tmp_path)
    csv_file = make_pairs(tmp_path, 2)
    spec = write_spec(f"steps: {{pairs: {{source: csv, with: {{path: {csv_file}}}}}}}")
    delays = [i / 1000 for i in range(0, 101, 7)]
    created_before_kill = 0
    for n, delay in enumerate(delays):
        url = fresh_url(store_url, tmp_path, n)
        try:
            child = subprocess.Popen(
                [sys.executable, "-c", CREATE_STORE, url],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            time.sleep(delay)
            child.send_signal(signal.SIGKILL)
            output = child.communicate()[0]
            created_before_kill += "created" in output
            code, ran = invoke(["pipeline", "run", str(spec), "--no-progress"], url)
            assert code == 0, ran
            assert_complete_store(url)
        finally:
            drop_fresh(url)
    assert created_before_kill < len(delays), "every kill came too late to test anything"


def test_processes_creating_one_store_at_once_all_succeed(store_url):
    script = CREATE_STORE.replace('print("ready", flush=True)\n', "")
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, store_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0] * 4, [err for _, err in results]
    assert_complete_store(store_url)


# -- reading commands never write ------------------------------------------------------------

READING_COMMANDS = [
    ["runs", "list"],
    ["runs", "show"],
    ["provenance", "query"],
    ["provenance", "show", "abc"],
    ["export", "--step", "pairs", "-o", "out.jsonl"],
    ["db", "current"],
]


def tables_of(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def invoke(args: list[str], store: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [*args, "--store", store])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code, result.output


@pytest.mark.parametrize("command", READING_COMMANDS, ids=" ".join)
def test_reading_commands_refuse_an_unrelated_database_and_change_nothing(
    command, store_url, monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total FLOAT)"))
    engine.dispose()

    code, output = invoke(command, store_url)

    assert code != 0 or command == ["db", "current"]
    assert "not an ecap store" in output
    assert "Traceback" not in output
    assert tables_of(store_url) == {"invoices"}


def test_a_writer_does_not_build_a_store_among_another_applications_tables(store_url):
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total FLOAT)"))
    engine.dispose()
    with pytest.raises(StoreError, match="not an ecap store"):
        Store(store_url)
    assert tables_of(store_url) == {"invoices"}


@pytest.mark.parametrize("command", READING_COMMANDS, ids=" ".join)
def test_reading_commands_never_create_a_store_in_an_empty_database(
    command, store_url, monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)
    if store_url.startswith("sqlite"):
        sqlite3.connect(store_url.removeprefix("sqlite:///")).close()  # an empty file
    invoke(command, store_url)
    assert tables_of(store_url) == set()


@pytest.mark.parametrize(
    "damage, says",
    [
        ("DELETE FROM alembic_version", "no schema version"),
        ("DROP TABLE alembic_version", "no schema version"),
        ("UPDATE alembic_version SET version_num = 'garbage!'", "garbage!"),
        ("INSERT INTO alembic_version VALUES ('0001')", "several schema versions"),
    ],
)
def test_a_missing_or_damaged_version_row_is_explained_with_the_fix(store_url, damage, says):
    Store(store_url).close()
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text(damage))
    engine.dispose()

    for read_only in (True, False):
        with pytest.raises(StoreError) as raised:
            Store(store_url, read_only=read_only)
        message = str(raised.value)
        assert says in message
        assert "ecap db" in message
    code, output = invoke(["runs", "list"], store_url)
    assert code == 1 and says in output and "Traceback" not in output


def test_ecap_db_stamp_repairs_a_lost_version_row(store_url):
    Store(store_url).close()
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
    engine.dispose()

    code, output = invoke(["db", "stamp", migrate.head_revision()], store_url)

    assert code == 0, output
    assert_complete_store(store_url)


def test_a_store_opened_for_reading_cannot_write(store_url):
    Store(store_url).close()
    reader = Store(store_url, read_only=True)
    with pytest.raises(StoreError):
        start_step(reader)
    assert reader.runs() == []


def test_a_reader_does_not_upgrade_an_older_store(store_url):
    engine = create_engine(store_url)
    migrate.upgrade(engine, "0001")
    engine.dispose()
    with pytest.raises(StoreError, match="ecap db upgrade"):
        Store(store_url, read_only=True)
    engine = create_engine(store_url)
    assert migrate.current_revision(engine) == "0001"
    engine.dispose()


# -- stores in missing or read-only folders ----------------------------------------------------

ALL_COMMANDS = [*READING_COMMANDS, ["db", "upgrade"]]


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=" ".join)
def test_a_store_in_a_missing_folder_is_one_error_line(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    store = f"sqlite:///{blocker / 'sub' / 'ecap.db'}"

    code, output = invoke(command, store)

    assert code == 1, output
    assert output.startswith("Error: ") and output.count("\n") == 1, output


@pytest.fixture
def read_only_store(tmp_path: Path) -> Iterator[str]:
    """A store with one finished run, in a folder this process cannot write: a read-only mode
    for an ordinary user, a read-only bind mount for root (who ignores modes)."""
    folder, view = tmp_path / "store", tmp_path / "read-only"
    folder.mkdir()
    Store(f"sqlite:///{folder / 'ecap.db'}").close()
    if os.geteuid() != 0:
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
        yield f"sqlite:///{folder / 'ecap.db'}"
        folder.chmod(stat.S_IRWXU)
        return
    view.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"root, and no read-only bind mount here: {mounted.stderr.decode()}")
    try:
        remount = ["mount", "-o", "remount,bind,ro", str(view)]
        if subprocess.run(remount, capture_output=True).returncode != 0:
            pytest.skip("root, and no read-only bind mount here")
        yield f"sqlite:///{view / 'ecap.db'}"
    finally:
        subprocess.run(["umount", "--lazy", str(view)], check=True)  # CLI stores stay open


@pytest.mark.parametrize("command", READING_COMMANDS, ids=" ".join)
def test_reading_commands_read_a_store_in_a_read_only_folder(
    command, read_only_store, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    code, output = invoke(command, read_only_store)
    if code != 0:  # nothing to show in an empty store is one line too
        assert output.startswith("Error: no ") and output.count("\n") == 1, output
    assert "cannot" not in output


@pytest.mark.parametrize("command", [["db", "upgrade"], ["pipeline", "run"]], ids=" ".join)
def test_writing_commands_in_a_read_only_folder_are_one_error_line(
    command, read_only_store, tmp_path, monkeypatch, write_spec
):
    monkeypatch.chdir(tmp_path)
    if command == ["pipeline", "run"]:
        csv_file = make_pairs(tmp_path, 2)
        command = [
            *command,
            str(write_spec(f"steps: {{p: {{source: csv, with: {{path: {csv_file}}}}}}}")),
        ]
    code, output = invoke(command, read_only_store)
    assert code == 1, output
    assert output.startswith("Error: cannot write the store") and output.count("\n") == 1, output


def test_a_writer_in_a_read_only_folder_is_refused_when_opened(read_only_store):
    with pytest.raises(StoreError, match="cannot write"):
        Store(read_only_store)


def test_a_new_store_where_no_folder_can_be_made_is_a_store_error(tmp_path):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot"):
        Store(f"sqlite:///{blocker / 'ecap.db'}")


# -- writers that overlap ----------------------------------------------------------------------


def test_a_sample_another_writer_finished_first_is_not_an_error(store_url):
    first, second = Store(store_url), Store(store_url)
    pair = a_pair(7)
    done = [CompletedSample("k7", "row7", [{"pair": pair.id}])]
    first.save_batch(start_step(first), "ecap1:step", "pairs", done, [], [pair])
    late = start_step(second)

    second.save_batch(late, "ecap1:step", "pairs", done, [], [pair])

    assert second.finished(["k7"]) == {"k7": [{"pair": pair.id}]}
    assert second.edges(src=("pair", pair.id)) == []
    assert second.failures([late]) == []


# -- filters are literal ----------------------------------------------------------------------


def test_query_filters_and_id_prefixes_are_literal_unless_like_is_asked(store_url):
    """``%`` and ``_`` in a filter value or an id prefix match themselves, not any text."""
    from ecap.provenance import query

    store = Store(store_url)
    step_run = start_step(store)
    pair = a_pair(3)
    store.save_batch(
        step_run,
        "ecap1:step",
        "pairs",
        [CompletedSample("k3", "r3", [{"pair": pair.id}])],
        [],
        [pair],
    )
    run_id = store.step_run(step_run)["run_id"]

    assert query(store, record_type="pair", run="%") == []
    assert query(store, record_type="pair", run="_" + run_id[1:]) == []
    assert query(store, record_type="pair", step="pair_") == []
    assert [r["id"] for r in query(store, record_type="pair", run=run_id[:4])] == [pair.id]
    assert [r["id"] for r in query(store, record_type="pair", step="pair_", like=True)] == [pair.id]
    assert [r["id"] for r in query(store, record_type="pair", run="%", like=True)] == [pair.id]
    assert store.run("%") is None
    assert store.latest_step_run("pairs", "%") is None
    assert store.find("%") == []
    assert store.find(pair.id[:6])[0][1].id == pair.id
