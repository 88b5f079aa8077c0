"""Route matching: message type and event, sender and receiver, `when:` conditions, fan-out order, filtering."""

from __future__ import annotations

import pytest

from router.errors import ConfigError
from router.routing.match import Router
from router.routing.model import RoutesConfig
from router.testing import adt_message
from schemas.identity import first_valid_fnr

FNR = first_valid_fnr(3, 4, 85, 123, synthetic=True)


def _router(routes):
    return Router(RoutesConfig.model_validate({"destinations": {"record": {"kind": "record"}, "kommune": {"kind": "queue", "queue": "k"}, "lab": {"kind": "queue", "queue": "l", "format": "fhir-json"},
                                                     "ext": {"kind": "fhir", "server": {"base_url": "http://127.0.0.1:9/fhir"}}}, "routes": routes}))


def _conv(converter, event="A01", **kw):
    [conv] = converter.convert(adt_message(event, control_id="M1", fnr=FNR, local_id="L1", visit="V1", **kw))
    return conv


class TestRouter:
    def test_every_matching_route_adds_its_destinations_once(self, converter):
        """Routes are tried in order; destinations are the union, first appearance first."""
        router = _router([
            {"name": "adt", "match": {"message_code": ["ADT"]}, "to": ["record", "kommune"]},
            {"name": "admit", "match": {"event": ["A01"]}, "to": ["kommune", "lab"]},
            {"name": "oru", "match": {"message_code": ["ORU"]}, "to": ["lab"]},
        ])
        decision = router.decide(_conv(converter))
        assert decision.routes == ("adt", "admit")
        assert decision.destinations == ("record", "kommune", "lab")

    def test_sender_and_receiver_match_application_facility_or_both(self, converter):
        """`PAS`, `STOLAV` and `PAS@STOLAV` all name the sender; a receiver that differs does not match."""
        for name in ("PAS", "STOLAV", "PAS@STOLAV"):
            assert _router([{"name": "s", "match": {"sender": [name]}, "to": ["record"]}]).decide(_conv(converter)).destinations == ("record",)
        assert _router([{"name": "r", "match": {"receiver": ["OTHER"]}, "to": ["record"]}]).decide(_conv(converter)).filtered

    def test_when_reads_the_message(self, converter):
        """A `when:` condition in the mapping language selects on content (PV1-2 patient class)."""
        inpatient = _router([{"name": "inpatients", "match": {"format": "hl7v2", "when": "PV1-2 = I"}, "to": ["kommune"]}])
        outpatient = _router([{"name": "outpatients", "match": {"format": "hl7v2", "when": "PV1-2 = O"}, "to": ["kommune"]}])
        conv = _conv(converter)
        assert inpatient.decide(conv).destinations == ("kommune",)
        assert outpatient.decide(conv).filtered

    def test_when_scoped_to_a_message_code_still_reads_the_message(self, converter):
        """A route for ADT reading PV1 and a Z-segment compiles against the ADT structures and matches an admission."""
        router = _router([{"name": "adt", "match": {"format": "hl7v2", "message_code": ["ADT"], "when": "PV1-2 = I and not ZPV-1 valued"}, "to": ["kommune"]}])
        assert router.decide(_conv(converter)).destinations == ("kommune",)

    def test_when_no_structure_of_its_code_can_hold_is_refused(self):
        """The engine's Router refuses, as load_routes does, a `when:` whose segment no structure of the route's code has."""
        with pytest.raises(ConfigError, match=r"route adt: when: no ADT message structure has the OBR segment"):
            _router([{"name": "adt", "match": {"format": "hl7v2", "message_code": ["ADT"], "when": "OBR-4 valued"}, "to": ["kommune"]}])

    def test_kith_sender_is_its_her_id_and_nothing_else(self, converter):
        """A KITH message, whose header names no HL7 parties, matches a route by its sender's HER-id, never by a bare `@`."""
        from router.settings import PROJECT_ROOT

        source = PROJECT_ROOT / "mappings" / "kith" / "messages" / "Dialogmelding.cases" / "helsefaglig_dialog.xml"
        [conv] = converter.convert(source.read_bytes())
        her_id = conv.envelope.sender.her_id
        assert _router([{"name": "s", "match": {"sender": [her_id]}, "to": ["record"]}]).decide(conv).destinations == ("record",)
        assert _router([{"name": "s", "match": {"sender": ["@"]}, "to": ["record"]}]).decide(conv).filtered

    def test_format_restricts(self, converter):
        """A kith-only route never takes an HL7 message."""
        assert _router([{"name": "xml", "match": {"format": "kith"}, "to": ["lab"]}]).decide(_conv(converter)).filtered

    def test_on_failure_override_travels_with_the_decision(self, converter):
        """A route's on_failure is handed on per destination (it applies to the fhir ones: with none, the route is refused)."""
        decision = _router([{"name": "all", "to": ["lab", "ext"], "on_failure": "park"}]).decide(_conv(converter))
        assert ("ext", "park") in decision.on_failure

    def test_message_code_and_event_match_whatever_their_case(self, converter):
        """`message_code: [adt]` takes ADT messages: matching nothing would settle them `filtered`, answered AA, lost."""
        decision = _router([{"name": "adt", "match": {"message_code": ["adt"], "event": ["a01"]}, "to": ["kommune"]}]).decide(_conv(converter))
        assert decision.destinations == ("kommune",)
