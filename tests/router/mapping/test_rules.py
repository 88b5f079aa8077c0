"""Tests for router/mapping/_rules.py: a `ref:` list, and a `ref:` with `rules:`, resolved when the rule runs.

`ref: [bed, room, ward]` references the first of them the message made; the `rules:` beside it give
the Reference's other elements (a display), which stand alone when none was made. Driven through
`Converter.convert` with the shipped mappings, or with a copy edited here.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import orjson
import pytest

from adapters.hl7v2.paths import compile_path
from router.mapping import MappingSet
from router.pipeline.convert import Converter
from router.settings import load_settings

ROOT = Path(__file__).resolve().parents[3]


def _a01(location: str) -> bytes:
    return (
        "MSH|^~\\&|DIPS|STOLAV|HB|HP|20250110083000||ADT^A01^ADT_A01|R1|P|2.5.1\r"
        "PID|1||15866112379^^^NOR^FNR||NORDMANN^OLA||19610615|M\r"
        f"PV1|1|I|{location}||||||||||||||||V1^^^STOLAV^VN\r"
    ).encode()


def _bundle(converter: Converter, data: bytes) -> dict:
    [out] = converter.convert(data)
    assert out.ok, out.error
    return orjson.loads(orjson.dumps(out.bundle))


def _where(bundle: dict) -> tuple[dict, dict[str, dict]]:
    """The stay's current location entry, and the Locations by fullUrl."""
    [encounter] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter"]
    return encounter["location"][0], {e["fullUrl"]: e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Location"}


class TestRefList:
    @pytest.mark.parametrize(
        ("pv1_3", "display", "chain"),
        [
            ("MED^301^2^STOLAV", "MED 301 2", ["MED/301/2", "MED/301", "MED"]),
            ("POL^12^^STOLAV", "POL 12", ["POL/12", "POL"]),  # no bed: the room
            ("AKU^^^STOLAV", "AKU", ["AKU"]),  # the point of care alone
            ("MED^^7^STOLAV", "MED 7", ["MED//7", "MED"]),  # a bed with no room is part of its ward
        ],
    )
    def test_the_first_resource_the_message_made_is_referenced(self, pv1_3, display, chain):
        """The stay refers to its bed, else room, else point of care, keeping the name; each Location is part of the next made."""
        location, locations = _where(_bundle(Converter(load_settings(environ={})), _a01(pv1_3)))
        assert location["status"] == "active" and location["location"]["display"] == display
        walked, url = [], location["location"]["reference"]
        while url:
            walked.append(locations[url]["identifier"][0]["value"])
            url = locations[url].get("partOf", {}).get("reference")
        assert walked == chain and len(locations) == len(chain)

    def test_without_its_resources_the_reference_keeps_its_name(self, tmp_path):
        """A message mapping that makes no Locations gives the stay the display alone, as before Locations were made."""
        copy = tmp_path / "hl7v2"
        shutil.copytree(ROOT / "mappings" / "hl7v2", copy, ignore=shutil.ignore_patterns("*.cases"))
        path = copy / "messages" / "ADT_A01.yaml"
        path.write_text(re.sub(r"  - name: (prior_)?(ward|room|bed)\n(    .*\n)+", "", path.read_text()))
        converter = Converter(load_settings(environ={}), mappings=MappingSet.load(copy, compile_path))
        location, locations = _where(_bundle(converter, _a01("MED^301^2^STOLAV")))
        assert location == {"location": {"display": "MED 301 2"}, "status": "active"}
        assert locations == {}
