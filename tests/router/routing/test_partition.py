"""The patient partition of a raw delivery: national id first, stable, spread, cheap fallbacks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from router.routing.partition import jump_hash, partition_of, patient_key
from router.testing import adt_message
from schemas.identity import NATIONAL_AUTHORITIES, NATIONAL_TYPE_CODES, first_valid_fnr


def _fnr(i: int) -> str:
    return first_valid_fnr(1 + i % 28, 1 + (i // 28) % 12, 70, 100 + i % 800, synthetic=True)


class TestPartition:
    def test_key_is_the_national_id_whatever_else_changes(self):
        """Two messages about one patient, different events and visits, share the key (the FNR in PID-3)."""
        a = adt_message("A01", control_id="1", fnr=_fnr(1), local_id="L1", visit="V1")
        b = adt_message("A03", control_id="2", fnr=_fnr(1), local_id="L1", visit="V9", given="Other")
        assert patient_key(a) == patient_key(b) == _fnr(1).encode()

    def test_patients_spread_over_partitions(self):
        """1,000 patients fill four partitions roughly evenly."""
        counts = Counter(partition_of(adt_message("A01", control_id=str(i), fnr=_fnr(i), local_id=f"L{i}", visit=f"V{i}"), 4) for i in range(1000))
        assert set(counts) == {0, 1, 2, 3} and min(counts.values()) > 150

    def test_unreadable_bytes_go_to_partition_zero(self):
        """No MSH, no PID, one partition: all land in 0."""
        assert partition_of(b"not a message", 4) == 0
        assert partition_of(b"MSH|^~\\&|A|B\rEVN|A01\r", 4) == 0
        assert partition_of(adt_message("A01", control_id="1", fnr=_fnr(2), local_id="L", visit="V"), 1) == 0

    def test_xml_reads_the_patient_id(self):
        """A KITH message's first Patient/Id is its key."""
        xml = b'<MsgHead xmlns="x"><Patient><FamilyName>T</FamilyName><Ident><Id>12345678901</Id></Ident></Patient></MsgHead>'
        assert patient_key(xml) == b"12345678901"

    def test_jump_hash_moves_few_keys_when_growing(self):
        """Going from 4 to 5 partitions moves about a fifth of the keys, never between old partitions."""
        moved = [k for k in range(10_000) if jump_hash(k * 7919, 4) != jump_hash(k * 7919, 5)]
        assert 1500 < len(moved) < 2500
        assert all(jump_hash(k * 7919, 5) == 4 for k in moved)


_ONE_FNR = _fnr(7)
_PID3_OF_ONE_PATIENT = [
    f"{_ONE_FNR}^^^NOR^FNR~L1^^^STOLAV^PI",  # as adt_message writes it
    f"{_ONE_FNR}^^^^fnr",  # the type code in lower case
    f"{_ONE_FNR}^^^NOR",  # named by its assigning authority, no type code
    f"{_ONE_FNR}^^^&2.16.578.1.12.4.1.4.1&ISO",  # the register's OID only
    _ONE_FNR,  # a bare valid number
    f"L1^^^STOLAV^PI~{_ONE_FNR}^^^FOLKEREG",  # the local number first
    f"{_ONE_FNR[:6]} {_ONE_FNR[6:]}^^^NOR^FNR",  # sent with a space
]


def test_every_way_of_writing_one_national_id_is_one_partition(tmp_path):
    """Whichever way PID-3 writes the fødselsnummer the record files the Patient under, the partition is the same.

    Why: per-patient order holds only while one patient's messages share a partition. The mapping
    recognises the FNR by type code in any case, by authority, by OID or by its digits alone, and
    ignores spaces; a key that read only an upper-case CX-5 sent these to other partitions.
    """
    from router.pipeline.convert import Converter
    from router.testing import isolated_settings

    converter = Converter(isolated_settings(tmp_path))
    canonical = adt_message("A08", control_id="1", fnr=_ONE_FNR, local_id="L1", visit="V1")
    bodies = [canonical.replace(f"|{_PID3_OF_ONE_PATIENT[0]}|".encode(), f"|{pid3}|".encode()) for pid3 in _PID3_OF_ONE_PATIENT]
    assert bodies[0] == canonical
    record_keys = {converter.convert(b)[0].patient_key for b in bodies}
    assert len(record_keys) == 1 and None not in record_keys  # the record sees one patient in all of them
    assert {patient_key(b) for b in bodies} == {_ONE_FNR.encode()}
    assert len({partition_of(b, 8) for b in bodies}) == 1


def test_a_national_id_in_pid_2_is_the_key_as_it_is_the_identity(tmp_path):
    """PID-2 (the external id, kept for backward compatibility) is mapped too: its FNR outranks a local PID-3."""
    from router.pipeline.convert import Converter
    from router.testing import isolated_settings

    canonical = adt_message("A08", control_id="1", fnr=_ONE_FNR, local_id="L1", visit="V1")
    old_style = canonical.replace(f"|1||{_PID3_OF_ONE_PATIENT[0]}|".encode(), f"|1|{_ONE_FNR}^^^NOR^FNR|L1^^^STOLAV^PI|".encode())
    assert old_style != canonical
    converter = Converter(isolated_settings(tmp_path))
    assert converter.convert(old_style)[0].patient_key == converter.convert(canonical)[0].patient_key
    assert patient_key(old_style) == patient_key(canonical) == _ONE_FNR.encode()


def test_a_number_under_a_local_authority_is_not_taken_for_the_national_id():
    """Eleven valid digits under a hospital's own authority are that hospital's number: keyed as such."""
    body = adt_message("A08", control_id="1", fnr=_ONE_FNR, local_id="L1", visit="V1")
    body = body.replace(f"|{_PID3_OF_ONE_PATIENT[0]}|".encode(), f"|{_ONE_FNR}^^^STOLAV^PI|".encode())
    assert patient_key(body) == f"{_ONE_FNR}|STOLAV".encode()


@pytest.mark.parametrize("marker", sorted({f"^^^^{t}" for t in NATIONAL_TYPE_CODES} | {f"^^^{a}" for a in NATIONAL_AUTHORITIES}))
def test_the_key_knows_every_national_marker_the_identity_knows(marker):
    """The key finds the national number by the markers schemas/identity.py declares, the ones the mapping library files by."""
    body = adt_message("A08", control_id="K1", fnr=_ONE_FNR, local_id="L1", visit="V1")
    pid = next(line for line in body.split(b"\r") if line.startswith(b"PID"))
    fields = pid.split(b"|")
    fields[3] = f"L1^^^STOLAV^PI~{_ONE_FNR}{marker}".encode()
    assert patient_key(body.replace(pid, b"|".join(fields))) == _ONE_FNR.encode()


_CASES = Path(__file__).resolve().parents[3] / "mappings" / "kith" / "messages"
_KITH_OF_ONE_PATIENT = [  # each about fødselsnummer 15866112379, written as Patient/OffId (KITH 1.x) or Patient/Ident/Id
    "Epikrise.cases/epikrise_1_2_fastlege.xml",  # the fastlege's HER-id under Patient, before nothing else
    "Epikrise.cases/epikrise_1_2_ny.xml",
    "Svarrapport.cases/svar_lab_1_4_ny.xml",  # the lab's HER-id follows the Patient
    "Henvisning.cases/henvisning_1_1_ny.xml",
    "Henvisning20.cases/henvisning_2_0_endring.xml",
]


def test_kith_messages_about_one_patient_share_its_partition(tmp_path):
    """A KITH 1.x message names its patient by OffId, not Ident/Id: the key is still that patient's number.

    Why: the key was the first <Id> after <Patient>, which in these messages is a fastlege's or a
    lab's HER-id: one patient's epikriser and lab reports went to as many partitions as they named
    organisations, and could be applied out of order, while all of one lab's patients shared one.
    """
    from router.pipeline.convert import Converter
    from router.testing import isolated_settings

    bodies = [(_CASES / name).read_bytes() for name in _KITH_OF_ONE_PATIENT]
    converter = Converter(isolated_settings(tmp_path))
    record_keys = {c.patient_key for b in bodies for c in converter.convert(b) if c.patient_key}
    assert len(record_keys) == 1  # the record sees one patient in all of them
    assert {patient_key(b) for b in bodies} == {b"15866112379"}


def test_a_kith_patient_number_typed_as_another_kind_is_not_the_national_key():
    """Eleven digits under an Ident whose TypeId is not national (here a hospital's) are not read as the fødselsnummer."""
    xml = (b'<MsgHead><Patient><Ident><Id>15866112379</Id><TypeId V="XY"/></Ident>'
           b'<Ident><Id>08817010785</Id><TypeId DN="Fnr" V="FNR"/></Ident></Patient></MsgHead>')
    assert patient_key(xml) == b"08817010785"
