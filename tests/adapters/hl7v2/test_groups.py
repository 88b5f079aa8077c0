"""Tests for adapters/hl7v2/groups.py: every segment lands in its own group."""

from __future__ import annotations

from adapters.hl7v2._tokenizer import tokenize
from adapters.hl7v2.groups import Group, build

ORU = [
    "MSH|^~\\&|LAB|X|||20240101||ORU^R01^ORU_R01|1|P|2.5.1",
    "PID|1||1",
    "PV1|1|O",
    "ORC|RE|1",
    "OBR|1|1||CBC",
    "OBX|1|NM|WBC||5",
    "NTE|1||note on WBC",
    "OBX|2|NM|RBC||4",
    "ZXT|1|custom",
    "OBR|2|2||BMP",
    "OBX|1|NM|NA||140",
    "SPM|1|S1",
    "OBX|1|NM|VOL||5",
]


def _tree() -> Group:
    return build(tokenize("\r".join(ORU)), "ORU_R01")


def _values(group: Group, seg: str, n: int) -> list[str]:
    return [s.field(n) for s in group.segments(seg)]


class TestBuild:
    def test_each_result_belongs_to_its_own_order(self):
        """OBX segments are grouped under the OBR they follow, never another."""
        orders = _tree().find_groups("ORDER_OBSERVATION")
        assert [_values(o, "OBR", 4) for o in orders] == [["CBC"], ["BMP"]]
        assert [[_values(obs, "OBX", 3)[0] for obs in o.groups("OBSERVATION")] for o in orders] == [["WBC", "RBC"], ["NA"]]

    def test_notes_stay_with_their_observation(self):
        """An NTE after an OBX belongs to that OBX's OBSERVATION group."""
        first = _tree().find_groups("ORDER_OBSERVATION")[0].groups("OBSERVATION")[0]
        assert _values(first, "NTE", 3) == ["note on WBC"]

    def test_obx_after_spm_belongs_to_the_specimen(self):
        """An OBX after SPM is the specimen's observation: kept, not dropped."""
        second = _tree().find_groups("ORDER_OBSERVATION")[1]
        [specimen] = second.groups("SPECIMEN")
        assert _values(specimen, "OBX", 3) == ["VOL"]

    def test_z_segment_stays_beside_its_predecessor(self):
        """A site-defined segment is kept in the group of the segment before it."""
        obs = _tree().find_groups("ORDER_OBSERVATION")[0].groups("OBSERVATION")[1]
        assert [s.name for s in obs.items] == ["OBX", "ZXT"]

    def test_no_segment_is_lost(self):
        """Every input segment appears exactly once in the tree."""
        seen = []
        stack = [_tree()]
        while stack:
            for item in stack.pop().items:
                (stack.append(item) if isinstance(item, Group) else seen.append(item.index))
        assert sorted(seen) == list(range(len(ORU)))

    def test_unknown_structure_is_flat(self):
        """A structure the standard lacks keeps its segments flat, in order."""
        root = build(tokenize("MSH|^~\\&|A\rZZZ|1\r"), "ZZZ_Z01")
        assert [s.name for s in root.items] == ["MSH", "ZZZ"]


OML = [
    "MSH|^~\\&|DIPS|X|||20240101||OML^O21^OML_O21|1|P|2.5.1",
    "PID|1||1",
    "ORC|NW|REK-1",
    "OBR|1|REK-1||HB",
    "OBX|1|NM|FAST||J",
    "ORC|NW|REK-2",
    "OBR|2|REK-2||KREA",
    "ORC|NW|REK-3",
    "OBR|3|REK-3||CRP",
]


class TestOrdersAreNotPriorResults:
    def test_each_orc_starts_its_own_order(self):
        """In OML^O21 an ORC after an order is the next ORDER, not the optional ORC of the first order's
        PRIOR_RESULT: matched greedily there, orders 2 and 3 became prior results and no ServiceRequest."""
        root = build(tokenize("\r".join(OML)), "OML_O21")
        orders = root.groups("ORDER")
        assert [o.segments("ORC")[0].field(2) for o in orders] == ["REK-1", "REK-2", "REK-3"]
        assert [o.groups("OBSERVATION_REQUEST")[0].segments("OBR")[0].field(2) for o in orders] == ["REK-1", "REK-2", "REK-3"]
        assert not root.find_groups("PRIOR_RESULT")

    def test_an_obr_without_its_own_orc_is_still_a_prior_result(self):
        """OBR is what anchors ORDER_PRIOR, so an OBR with no ORC after an order is read as the standard reads it."""
        root = build(tokenize("\r".join(OML[:5] + ["OBR|2|OLD-9||HB"])), "OML_O21")
        [prior] = root.find_groups("ORDER_PRIOR")
        assert prior.segments("OBR")[0].field(2) == "OLD-9"

    def test_oru_orders_without_orc_stay_in_one_patient_result(self):
        """ORC is optional in ORU's ORDER_OBSERVATION: a second ORC opens the next order, not a new PATIENT_RESULT."""
        segments = [*ORU[:9], "ORC|RE|2", *ORU[9:]]
        root = build(tokenize("\r".join(segments)), "ORU_R01")
        [result] = root.groups("PATIENT_RESULT")
        assert [o.segments("OBR")[0].field(4) for o in result.groups("ORDER_OBSERVATION")] == ["CBC", "BMP"]
        assert result.groups("ORDER_OBSERVATION")[1].segments("ORC")[0].field(2) == "2"
