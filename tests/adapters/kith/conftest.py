"""Fixtures for the KITH adapter tests: the national schema set and examples from ../shared.

The files under ../shared are third-party and read-only: tests read them in
place and never copy them into the repository.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared"
NORSK = SHARED / "norsk"
FAMILIES = ("plo", "Dialogmelding", "Henvisning", "Epikrise", "Svarrapport", "Rekvisisjon", "eresept")
PLO_16 = "plo/1_6/pasientlogistikk_1_6_mottak/Pasientlogistikk_Utskrivningsklar_pasient_v1-6_Ny.xml"


def examples(family: str) -> list[Path]:
    """Every *.xml under eksempel/<family>, recursively and sorted; [] without ../shared."""
    return sorted((NORSK / "eksempel" / family).rglob("*.xml"))


@pytest.fixture(scope="session")
def norsk(shared_dir: Path) -> Path:
    """The norsk/ reference folder; skips without ../shared."""
    return shared_dir / "norsk"


@pytest.fixture(scope="session")
def schemas(norsk: Path):
    """The process-wide SchemaSet over the national schema folder."""
    from adapters.kith.xsd import schema_set

    return schema_set(norsk / "skjema")


@pytest.fixture(scope="session")
def example(norsk: Path):
    """Read one national example's bytes by its path under eksempel/."""

    def read(relative: str) -> bytes:
        return (norsk / "eksempel" / relative).read_bytes()

    return read
