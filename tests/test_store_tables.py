"""The store's layout has one definition (``ecap.store.tables``, SQLAlchemy Core); the ORM classes
of ``ecap.store.schema`` are mapped onto it, and reading a store needs neither them nor the
records' validators."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ecap.store import schema, tables


def mapped_classes() -> list[type]:
    return [mapper.class_ for mapper in schema.Base.registry.mappers]


def annotated_columns(cls: type) -> set[str]:
    """The names a mapped class annotates for type checkers (its own and its mixins')."""
    return {
        name
        for klass in cls.__mro__
        if klass not in schema.Base.__mro__
        for name in vars(klass).get("__annotations__", {})
    }


def test_every_table_has_one_mapped_class_on_the_same_metadata():
    assert schema.Base.metadata is tables.metadata
    mapped = sorted(cls.__table__.name for cls in mapped_classes())  # type: ignore[attr-defined]
    assert mapped == sorted(tables.metadata.tables)


@pytest.mark.parametrize("cls", mapped_classes(), ids=lambda cls: cls.__name__)
def test_a_mapped_class_annotates_exactly_its_table_columns(cls: type):
    table = cls.__table__  # type: ignore[attr-defined]
    assert annotated_columns(cls) == set(table.c.keys())
    assert set(cls.__mapper__.columns.keys()) == set(table.c.keys())  # type: ignore[attr-defined]


def test_record_tables_and_record_classes_name_the_same_tables():
    assert {t: cls.__table__ for t, cls in schema.RECORD_TABLES.items()} == tables.RECORDS  # type: ignore[attr-defined]


def test_reading_a_store_loads_no_orm_no_other_dialect_and_no_record(tmp_path: Path):
    from ecap.store import Store

    url = f"sqlite:///{tmp_path / 'ecap.db'}"
    store = Store(url)
    store.start_run(
        name="r", spec_path="p.yaml", spec_text="", spec_hash="h", ecap_version="0", plugins={}
    )
    store.close()
    probe = (
        "import sys\n"
        "from ecap.store import Store\n"
        f"assert len(Store({url!r}, read_only=True).runs(5)) == 1\n"
        "unwanted = ('sqlalchemy.orm', 'ecap.store.schema', 'sqlalchemy.dialects.postgresql',"
        " 'ecap.records', 'pydantic')\n"
        "print([m for m in unwanted if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_records_build_their_validators_on_first_use():
    probe = (
        "from ecap.records import ImageRef, Pair\n"
        "before = Pair.__pydantic_complete__\n"
        "Pair.of(ImageRef(uri='a.png', sha256='0' * 64), ImageRef(uri='b.png', sha256='1' * 64))\n"
        "print(before, Pair.__pydantic_complete__)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False True"
