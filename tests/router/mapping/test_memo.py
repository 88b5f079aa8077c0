"""Resources built from one value alone are built once per value and copied after (router/mapping/engine.py, _one).

A practitioner in PV1-7 and the sending facility in MSH-4 repeat in almost
every message of a feed. The engine remembers what it built from such a value
(as JSON bytes) and gives each later message its own copy. These tests drive
that through `helsebro convert` and `Converter.convert` and compare every
answer with what a converter that has seen nothing gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from router.cli import main
from router.mapping import engine
from router.pipeline.convert import Converter
from router.settings import load_settings

LISA = "9144900^LEGE^LISA^^^^^^HPR^^^^HPR"
DAG = "9144901^DOKTER^DAG^^^^^^HPR^^^^HPR"


def adt(ctrl: str, attending: str, admitting: str = "", *, comp: str = "^") -> str:
    """An ADT^A01 whose PV1-7 and PV1-17 hold *attending* and *admitting* as written, with *comp* as the component separator."""
    pv1 = ["PV1", "1", "I", "", "", "", "", attending] + [""] * 9 + [admitting, "", "V1"]
    return "\r".join(
        [
            f"MSH|{comp}~\\&|DIPS|STOLAV{comp}974749025{comp}ENH|HB|HP|20250110083000||ADT{comp}A01{comp}ADT_A01|{ctrl}|P|2.5.1",
            f"PID|1||15866112379{comp * 3}NOR{comp}FNR||NORDMANN{comp}OLA||19610615|M",
            "|".join(pv1),
        ]
    ) + "\r"


def fresh(text: str, *, trace: bool = False) -> list:
    """What a converter that has remembered nothing gives."""
    return [(r.bundle, r.error and (r.error.reason, r.error.location)) for r in Converter(load_settings(environ={})).convert(text.encode(), trace=trace)]


def outcome(converter: Converter, text: str, *, trace: bool = False) -> list:
    return [(r.bundle, r.error and (r.error.reason, r.error.location)) for r in converter.convert(text.encode(), trace=trace)]


def kind(bundle: dict, resource_type: str) -> list[dict]:
    return [e for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


@pytest.fixture
def converter() -> Converter:
    return Converter(load_settings(environ={}))


def test_cli_gives_every_message_of_a_file_its_own_equal_practitioner(capsys, tmp_path: Path):
    """Three messages naming the same attending doctor: three equal Practitioner entries, each as a fresh converter makes it."""
    texts = [adt(f"C{k}", LISA) for k in range(3)]
    path = tmp_path / "feed.hl7"
    path.write_bytes("".join(texts).encode())
    assert main(["convert", str(path)]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(docs) == 3
    for doc, text in zip(docs, texts):
        assert doc == json.loads(orjson.dumps(fresh(text)[0][0]))
    practitioners = [kind(doc, "Practitioner") for doc in docs]
    assert practitioners[0] == practitioners[1] == practitioners[2]
    assert practitioners[0][0]["resource"]["name"] == [{"family": "LEGE", "given": ["LISA"]}]


def test_a_later_message_gets_a_copy_that_no_earlier_change_reaches(converter):
    """Changing an earlier Bundle (as provenance, prune or the record may) leaves what the next message is given untouched."""
    first = outcome(converter, adt("C1", LISA))[0][0]
    for entry in kind(first, "Practitioner") + kind(first, "Organization"):
        entry["resource"]["name"] = "changed"
        entry["resource"].setdefault("identifier", []).append({"value": "x"})
        entry["request"]["url"] = "changed"
    second = outcome(converter, adt("C1", LISA))[0][0]
    assert second == fresh(adt("C1", LISA))[0][0]
    assert kind(second, "Practitioner")[0] is not kind(first, "Practitioner")[0]


def test_each_value_is_remembered_on_its_own(converter):
    """Doctor Dag after doctor Lisa, and both in one message (attending and admitting), come out as for a fresh converter."""
    for text in (adt("C1", LISA), adt("C2", DAG), adt("C3", LISA, DAG), adt("C4", DAG, LISA), adt("C5", LISA, LISA)):
        assert outcome(converter, text) == fresh(text)
    both = outcome(converter, adt("C6", LISA, DAG))[0][0]
    assert sorted(e["resource"]["identifier"][0]["value"] for e in kind(both, "Practitioner")) == ["9144900", "9144901"]
    same = outcome(converter, adt("C7", LISA, LISA))[0][0]
    assert len(kind(same, "Practitioner")) == 1  # attending = admitting: one entry, remembered or not


def test_the_same_text_under_other_delimiters_is_not_mistaken_for_it(converter):
    """PV1-7 reads `9144900^LEGE^LISA` both times; with `#` as the component separator that text is one component, not three."""
    standard = adt("C1", "9144900^LEGE^LISA")
    other = adt("C2", "9144900^LEGE^LISA", comp="#")
    assert outcome(converter, standard) == fresh(standard)
    remembered_other = outcome(converter, other)
    assert remembered_other == fresh(other)
    assert kind(remembered_other[0][0], "Practitioner")[0]["resource"]["identifier"][0]["value"] == "9144900^LEGE^LISA"
    assert kind(outcome(converter, standard)[0][0], "Practitioner")[0]["resource"]["identifier"][0]["value"] == "9144900"


def test_a_rejected_value_is_rejected_every_time(converter):
    """A practitioner whose national id fails its check digits fails its message each time it comes, before and after
    good ones: errors are never remembered."""
    invalid = adt("C1", "15866112370^LEGE^LISA^^^^^^NOR^^^^FNR")
    expected = fresh(invalid)
    assert expected[0][0] is None and "check digits" in expected[0][1][0]
    for text in (invalid, adt("C2", LISA), invalid, invalid):
        assert outcome(converter, text) == fresh(text)


def test_explain_still_names_the_rules_of_a_remembered_resource(converter):
    """--explain builds the resource rule by rule, so the trace lists the Practitioner's and Organization's rules after the memo knows them."""
    outcome(converter, adt("C1", LISA))
    explained = outcome(converter, adt("C2", LISA), trace=True)[0][0]
    targets = {t for t, _, _ in explained["_explain"]}
    assert {"Practitioner.name.family", "Practitioner.identifier.value", "Organization.name"} <= targets
    assert explained == fresh(adt("C2", LISA), trace=True)[0][0]


def test_what_is_remembered_is_bounded(converter, monkeypatch):
    """The memo starts over when it is full, so values that never repeat cannot grow it without end; answers stay the same."""
    monkeypatch.setattr(engine, "_MEMO_MAX", 3)
    for k in range(10):
        text = adt(f"C{k}", f"91449{k:02d}^LEGE^NR{k}^^^^^^HPR^^^^HPR")
        assert outcome(converter, text) == fresh(text)
        assert len(converter._fn_ctx.memo) <= 3  # a private attribute on purpose: the bound is what this test is about


def place(ctrl: str, location: str, *, sender: str = "STOLAV") -> str:
    """An ADT^A01 whose PV1-3 is *location*, from *sender*."""
    return "\r".join(
        [
            f"MSH|^~\\&|DIPS|{sender}|HB|HP|20250110083000||ADT^A01^ADT_A01|{ctrl}|P|2.5.1",
            "PID|1||15866112379^^^NOR^FNR||NORDMANN^OLA||19610615|M",
            f"PV1|1|I|{location}||||||||||||||||V1",
        ]
    ) + "\r"


def test_locations_are_remembered_each_as_a_fresh_converter_makes_it(converter):
    """A point of care, its room and bed (each part of the one before) are built once per PV1-3 value; every message,
    after other places, other senders and the same place again, gets what a fresh converter gives."""
    uses = {u.name: u for u in converter.mappings.messages["ADT_A01"].resources}
    assert all(uses[name].memo is not None for name in ("ward", "room", "bed", "prior_ward", "prior_room", "prior_bed"))
    texts = [place("L1", "MED^301^2^STOLAV"), place("L2", "MED^302^2^STOLAV"), place("L3", "MED^301^2"), place("L4", "MED^301^2", sender="AHUS"),
             place("L5", "MED^301^^STOLAV"), place("L6", "MED^301^2^STOLAV"), place("L7", "MED^^2^STOLAV")]
    unremembering = Converter(load_settings(environ={}))
    for text in texts:
        unremembering._fn_ctx.memo.clear()  # as a fresh converter, without loading the mappings seven times
        assert outcome(converter, text) == outcome(unremembering, text)
    assert outcome(converter, texts[0]) == fresh(texts[0])
    beds = [kind(outcome(converter, text)[0][0], "Location")[-1]["resource"] for text in (texts[0], texts[3])]
    assert beds[0]["partOf"] != beds[1]["partOf"]  # the same codes from another hospital are its own room


def test_a_location_whose_part_may_be_missing_is_built_each_time(tmp_path):
    """A bed is remembered only when the room and ward it may be part of are made whenever it is: a `when:` on the room
    (made in some messages, not in others) leaves the bed built per message, the room itself still remembered."""
    import re
    import shutil

    from adapters.hl7v2.paths import compile_path
    from router.mapping import MappingSet

    copy = tmp_path / "hl7v2"
    shutil.copytree(Path(__file__).resolve().parents[3] / "mappings" / "hl7v2", copy, ignore=shutil.ignore_patterns("*.cases"))
    path = copy / "messages" / "ADT_A01.yaml"
    path.write_text(re.sub(r"(  - name: room\n    use: PL.Room.Location\n    from: PV1-3\n)", r"\1    when: PV1-2 = I\n", path.read_text()))
    uses = {u.name: u for u in MappingSet.load(copy, compile_path).messages["ADT_A01"].resources}
    assert uses["room"].memo is not None and uses["bed"].memo is None
    assert uses["prior_bed"].memo is not None
