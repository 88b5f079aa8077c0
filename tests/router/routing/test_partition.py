"""The patient partition of a raw delivery: national id first, stable, spread, cheap fallbacks."""

from __future__ import annotations

from collections import Counter

from router.routing.partition import jump_hash, partition_of, patient_key
from router.testing import adt_message
from schemas.identity import first_valid_fnr


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
