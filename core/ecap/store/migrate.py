"""Schema versions. A new store is created at the newest revision; an older one is upgraded when
opened for writing (``auto_upgrade``), otherwise refused with the command that upgrades it. A store
written by a newer ecap is always refused: reading it with old code could lose data.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from ..errors import StoreError

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None, "ecap ships at least one migration"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = alembic_config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def ensure_schema(engine: Engine, url: str, auto_upgrade: bool) -> None:
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    known = {s.revision for s in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}
    if current is not None and current not in known:
        raise StoreError(
            f"the store {url} was written by a newer ecap (schema revision {current}); "
            "upgrade ecap (pip install -U editcaption) to read it"
        )
    if not auto_upgrade and current is not None:
        raise StoreError(
            f"the store {url} is at schema revision {current}, this ecap needs {head}.\n"
            f"Back it up, then run: ecap db upgrade --store '{url}'"
        )
    upgrade(engine)
