"""Choice groups in outbound structures: ORM^O01's order detail is one of <OBR|RQD|RQ1|RXO|ODS|ODT>.

The structure check (adapters/hl7v2/_versions.py) follows a mapping's segments through the
receiver's structure. hl7apy draws ORM's order detail as a choice; read as a sequence, an
order group writing OBR and then RXO passed, though the message then holds two of the
alternatives where the standard (and Helsebro's own inbound matcher) allows one, and RXO
before OBR was refused as "out of order", as if swapping them were the fix. Through
load_outbound and the renderer, as a destination loads and renders them.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from adapters.hl7v2.outbound import load_outbound, load_tables
from adapters.hl7v2.render import Hl7v2Renderer
from router.contracts import Converted, MessageHeader
from router.errors import MappingError
from router.settings import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "mappings" / "outbound" / "hl7v2"

HEAD = """\
outbound: ORM_O01
message: ORM
events: [O01]
segments:
  - segment: PID
    resource: Patient
    fields:
      PID-5: {each: name, components: {1: family}}
  - group: ORDER
    each: MedicationRequest
    segments:
      - segment: ORC
        fields:
          ORC-1: {value: NW}
"""

SEGMENTS = {
    "RXO": '      - segment: RXO\n        fields:\n          RXO-1: {from: medicationCodeableConcept, components: {1: "coding[0].code", 2: "coding[0].display"}}\n',
    "OBR": '      - segment: OBR\n        fields:\n          OBR-4: {from: medicationCodeableConcept, components: {1: "coding[0].code"}}\n',
    "NTE": "      - segment: NTE\n        each: note\n        fields:\n          NTE-3: text\n",
}

PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "NORDMANN"}]}
ORDER = {
    "resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order", "subject": {"reference": "urn:uuid:p1"},
    "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": "N02BE01", "display": "Paracetamol"}]},
}


def _write(tmp_path: Path, order: list[str]) -> Path:
    folder = tmp_path / "hl7v2"
    shutil.copytree(SHIPPED / "tables", folder / "tables")
    path = folder / "ORM_O01.yaml"
    path.write_text(HEAD + "".join(SEGMENTS[s] for s in order), encoding="utf-8")
    return path


def _render(path: Path, version: str, resources: list[dict]) -> list[str]:
    mapping = load_outbound(path, version, tables=load_tables(path.parent))
    renderer = Hl7v2Renderer("legacy-lis", [mapping], version=version, charset="UNICODE UTF-8", named=True)
    entries = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources]
    header = MessageHeader(message_code="ORM", trigger_event="O01", control_id="T-1")
    conv = Converted(index=0, raw=b"x", control_id="T-1", bundle={"resourceType": "Bundle", "type": "transaction", "entry": entries}, header=header)
    return renderer.render(conv).decode("utf-8").split("\r")[1:-1]  # without MSH and the final CR


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.5.1"])
def test_a_pharmacy_order_is_rxo_without_obr(tmp_path, version):
    """ORC, then RXO alone, and an NTE after the order detail: loads and renders for each version (2.3.1 lists RXO last)."""
    path = _write(tmp_path, ["RXO", "NTE"])
    lines = _render(path, version, [PATIENT, {**ORDER, "note": [{"text": "Ved smerter"}]}])
    assert lines == ["PID|||||NORDMANN", "ORC|NW", "RXO|N02BE01^Paracetamol", "NTE|1||Ved smerter"]


@pytest.mark.parametrize(
    ("version", "either"),
    [("2.3", "<OBR|RQD|RQ1|RXO|ODS|ODT>"), ("2.3.1", "<OBR|RQD|RQ1|ODS|ODT|RXO>"), ("2.5.1", "<OBR|RQD|RQ1|RXO|ODS|ODT>")],
)
@pytest.mark.parametrize("order", [["OBR", "RXO"], ["RXO", "OBR"]], ids=["obr-then-rxo", "rxo-then-obr"])
def test_two_children_of_the_choice_are_refused_at_the_second(tmp_path, version, either, order):
    """OBR and RXO in one order group, in either order: refused at the second, naming the choice, never rendered."""
    path = _write(tmp_path, order)
    first, second = order
    line = path.read_text(encoding="utf-8").splitlines().index(f"      - segment: {second}") + 1
    with pytest.raises(MappingError) as err:
        load_outbound(path, version, tables=load_tables(path.parent))
    assert err.value.reason == f"{second} cannot stand with {first}: ORM_O01 holds one of {either} there, not both"
    assert err.value.file.endswith("ORM_O01.yaml")
    assert err.value.line == line


def test_a_child_of_the_choice_after_what_follows_it_is_out_of_order(tmp_path):
    """RXO after the order detail's NTE is out of order, as before: the choice changes nothing past it."""
    path = _write(tmp_path, ["OBR", "NTE", "RXO"])
    with pytest.raises(MappingError) as err:
        load_outbound(path, "2.5.1", tables=load_tables(path.parent))
    assert err.value.reason == "RXO is out of order: ORM_O01 puts it earlier"


def test_a_v2_6_order_detail_is_still_a_choice(tmp_path):
    """v2.6 keeps ORM's order detail as v2.5.1 has it: OBR then RXO is refused there too."""
    path = _write(tmp_path, ["OBR", "RXO"])
    with pytest.raises(MappingError, match=re.escape("RXO cannot stand with OBR: ORM_O01 holds one of <OBR|RQD|RQ1|RXO|ODS|ODT> there")):
        load_outbound(path, "2.6", tables=load_tables(path.parent))


@pytest.mark.parametrize("version", ["2.6", "2.7", "2.8"])
def test_groups_later_tables_mark_as_choices_are_read_in_turn(version):
    """hl7apy's v2.6+ tables mark EHC_E15's payment header <PMT|PYE> as a choice; the standard writes PMT, then PYE.

    A choice is taken only where v2.5.1 has one (_versions._standard_choices), so a later receiver's
    remittance advice keeps its payee instead of being refused ("PYE cannot stand with PMT").
    """
    from adapters.hl7v2._versions import StructureCursor, version_defs

    cursor = StructureCursor(version_defs(version), {"E15": "EHC_E15"})
    for segment in ("MSH", "PMT", "PYE"):
        cursor.place(segment, None, repeated=False)
