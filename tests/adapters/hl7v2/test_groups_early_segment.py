"""A top-level segment sent early (REF^I12's closing NTE right after RF1, a PRD, PID or DG1) is the stray, not everything after it.

Greedy matching took such an NTE as REF_I12's last {NTE}, skipping the required PROVIDER_CONTACT and PID
(or the optional DG1 and OBSERVATION) whose segments still followed: every PRD, DG1, OBR and OBX after it
then fell out of its group (adapters/hl7v2/groups.py). Now the NTE alone is misplaced, kept at the top of
the message where it stands, and read as a note about the referral, beside its closing notes; the results'
notes stay theirs. Synthetic Norwegian people only.
"""

from __future__ import annotations

import pytest

from adapters.hl7v2._tokenizer import tokenize
from adapters.hl7v2.groups import Group, build
from router.testing import one_bundle

FNR = "15866112379"  # synthetic (Tenor, month + 80)
MSH = "MSH|^~\\&|INFODOC|LEGESENTERET|DIPS|STOLAV|20250201091500||{type}|REF-1|P|2.5.1"
RF1 = "RF1|P^Pending^HL70283|R^Routine^HL70280|Med^Medical^HL70281||O^Outpatient^HL70284|HEN-5001^INFODOC|20250201"
EARLY = "NTE|1||Henvisningens merknad"
RP = "PRD|RP^Referring Provider^HL70286|FASTLEGE^FRIDA|||||9144901^HPR"
RT = "PRD|RT^Referred to Provider^HL70286|KARDIOLOG^KARI|||||9144902^HPR"
PID = f"PID|1||{FNR}^^^NOR^FNR||NORDMANN^OLA||19610615|M"
DG1 = "DG1|1||I20.9^Angina pectoris^ICD10|||W"
RESULTS = ["OBR|1|||NPU02319^Hemoglobin^NLK", "NTE|1||Rekvirentens merknad",
           "OBX|1|NM|NPU02319^Hemoglobin^NLK||134|g/L|||||F", "NTE|1||Svarets merknad"]
CLOSING = "NTE|1||Haster"
TREE = ["REF_I12", "MSH", "RF1", ["PROVIDER_CONTACT", "PRD"], ["PROVIDER_CONTACT", "PRD"], "PID", "DG1",
        ["OBSERVATION", "OBR", "NTE", ["RESULTS_NOTES", "OBX", "NTE"]]]
AFTER = {"RF1": 3, "PRD": 4, "PID": 6, "DG1": 7}  # where the early NTE stands in TREE's top level


def _message(*body: str, kind: str = "REF^I12^REF_I12") -> str:
    return "\r".join([MSH.format(type=kind), *body]) + "\r"


def _referral(after: str, *closing: str) -> str:
    body = [RF1, RP, RT, PID, DG1, *RESULTS, *closing]
    at = {"RF1": 1, "PRD": 2, "PID": 4, "DG1": 5}[after]
    return _message(*body[:at], EARLY, *body[at:])


def _names(group: Group) -> list:
    """The tree as nested lists: a group is [its name, its items...], a segment its name."""
    return [group.name, *(_names(i) if isinstance(i, Group) else i.name for i in group.items)]


class TestPlacement:
    @pytest.mark.parametrize("after", list(AFTER))
    def test_an_early_nte_is_the_one_stray_and_every_group_keeps_its_segments(self, after):
        """An NTE after RF1, the first PRD, PID or DG1 is the only misplaced segment, kept at the top where it stands; PRDs, DG1, OBR and OBX are in their groups."""
        root = build(tokenize(_referral(after)), "REF_I12")
        assert [s.field(3) for s in root.misplaced] == ["Henvisningens merknad"]
        expected = TREE[:AFTER[after]] + ["NTE"] + TREE[AFTER[after]:]
        assert _names(root) == expected

    def test_a_referral_in_order_is_placed_as_before(self):
        """A referral whose only message NTE closes it, after its stay, has nothing misplaced, its NTE last at the top."""
        root = build(tokenize(_message(RF1, RP, RT, PID, DG1, *RESULTS, "PV1|1|O", CLOSING)), "REF_I12")
        assert root.misplaced == [] and _names(root) == [*TREE, ["PATIENT_VISIT", "PV1"], "NTE"]

    def test_a_segment_a_later_member_takes_is_no_stray(self):
        """ADT^A01's PV1 skips the first ROL while a ROL follows: v2.5.1 has a second ROL after PV1, so nothing is misplaced."""
        data = _message("EVN|A01", PID, "PV1|1|I", "ROL|1|AD|AT|9144901^LEGE^LISA", kind="ADT^A01^ADT_A01")
        root = build(tokenize(data), "ADT_A01")
        assert root.misplaced == [] and [i.name for i in root.items] == ["MSH", "EVN", "PID", "PV1", "ROL"]


class TestReferralNotes:
    @pytest.mark.parametrize("after", list(AFTER))
    def test_an_early_nte_is_the_referrals_note_and_its_providers_stay(self, converter, after):
        """An NTE before the results is a note on the referral, before its closing note; both PRDs stay its requester and performer, the results' notes are not its."""
        bundle = one_bundle(converter, _referral(after, "PV1|1|O", CLOSING).encode())
        [referral] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"]
        assert referral["note"] == [{"text": "Henvisningens merknad"}, {"text": "Haster"}]
        assert referral["requester"]["identifier"]["value"] == "9144901"
        assert [p["identifier"]["value"] for p in referral["performer"]] == ["9144902"]
