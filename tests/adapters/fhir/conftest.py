"""Fixtures for the record's tests: each runs on SQLite and on PostgreSQL.

PostgreSQL tests get a schema of their own, dropped afterwards; CI starts the server,
so an unreachable PostgreSQL fails the tests rather than skipping them.
"""

from __future__ import annotations

import uuid

import pytest

from adapters.fhir.record import open_record
from router.settings import Settings
from router.testing import drop_schema

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def record_url(request, tmp_path):
    """A record URL on a fresh, empty database of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/record.sqlite3"
        return
    schema = f"helsebro_{uuid.uuid4().hex[:12]}"
    yield f"{PG_URL}?schema={schema}"
    drop_schema(PG_URL, schema)


@pytest.fixture
def settings(record_url, tmp_path):
    """Settings naming the test's record."""
    return Settings(record_url=record_url, data_dir=tmp_path / "data")


@pytest.fixture
def record(settings):
    """An open record, closed after the test."""
    opened = open_record(settings)
    yield opened
    opened.close()
