"""Tests for adapters/kith/_outbound.py and _outbound_fns.py: the outbound language's load-time checks and functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.kith._outbound import load_outbound
from adapters.kith._outbound_fns import compile_path, id_type, id_type_list, id_type_name, parse_path, xml_date, xml_datetime
from router.errors import MappingError

ROOT = Path(__file__).resolve().parents[3]
PLO = ROOT / "mappings" / "outbound" / "kith" / "PLO_InnlagtPasient.yaml"

# A small valid mapping; each error test changes one line of it.
VALID = """\
message: T
type: {V: LOG_INNLAGT, DN: Melding om innlagt pasient}
namespaces:
  pl: http://www.kith.no/xmlstds/po/Pasientlogistikk/2012-04-01
  po: http://www.kith.no/xmlstds/po/poKomponent/2012-04-01
resources:
  patient: {type: Patient, required: true}
  encounter: {type: Encounter}
msghead:
  sender:
    - element: Organisation
      children:
        - {element: OrganisationName, text: Helsebro}
  receiver:
    - {element: OrganisationName, text: {from: destination.receiver_her_id}}
body:
  element: pl:Pasientlogistikk
  children:
    - element: po:TidspunktForHendelse
      attributes:
        V: {from: encounter.period.start, fn: datetime}
"""


def _load(tmp_path: Path, text: str, name: str = "T"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return load_outbound(path)


def _error(tmp_path: Path, old: str, new: str) -> MappingError:
    assert old in VALID, old
    with pytest.raises(MappingError) as info:
        _load(tmp_path, VALID.replace(old, new, 1))
    return info.value


class TestLoadOutbound:
    def test_project_mapping_loads(self):
        """PLO_InnlagtPasient loads: LOG_INNLAGT in the PLO 1.6 Pasientlogistikk namespace, reading the receiver's HER-id."""
        m = load_outbound(PLO)
        assert (m.name, m.type_code) == ("PLO_InnlagtPasient", "LOG_INNLAGT")
        assert m.payload_namespace == "http://www.kith.no/xmlstds/po/Pasientlogistikk/2012-04-01"
        assert m.destination_reads == {"receiver_name", "receiver_her_id"}
        assert [r.name for r in m.resources] == ["patient", "encounter", "hospital", "clinician"]

    def test_own_and_receiver_name_are_readable(self, tmp_path):
        """`own.organisation_name`, `own.her_id` and `destination.receiver_name` load; only destination fields count as destination reads."""
        text = VALID.replace("text: Helsebro}", "text: {from: own.organisation_name}}\n        - {element: Id, text: {from: own.her_id}}")
        text = text.replace("{from: destination.receiver_her_id}", "{from: destination.receiver_name}")
        assert _load(tmp_path, text).destination_reads == {"receiver_name"}

    def test_valid_sample_loads(self, tmp_path):
        """The sample the error tests start from is itself valid."""
        assert _load(tmp_path, VALID).body.tag == "{http://www.kith.no/xmlstds/po/Pasientlogistikk/2012-04-01}Pasientlogistikk"

    @pytest.mark.parametrize(
        ("old", "new", "line", "words"),
        [
            ("message: T\n", "message: T\ncolour: red\n", 2, "unknown key 'colour'"),
            ("    - {element: OrganisationName, text: {from: destination.receiver_her_id}}", "    - {element: OrganisationName, txt: x}", 15, "unknown key 'txt'"),
            ("encounter.period.start", "encounter.period.begin", 21, "Encounter.period has no element 'begin'"),
            ("encounter.period.start", "stay.period.start", 21, "unknown name 'stay'"),
            ("encounter.period.start", "encounter.period", 21, "is a Period; name one of its elements"),
            ("fn: datetime", "fn: to_upper", 21, "unknown function 'to_upper'"),
            ("element: po:TidspunktForHendelse", "element: xx:TidspunktForHendelse", 19, "prefix 'xx' is not declared"),
            ("element: po:TidspunktForHendelse", "element: TidspunktForHendelse", 19, "body elements need a prefix"),
            ("message: T", "message: Other", 1, "must be the file's name"),
            ("encounter: {type: Encounter}", "encounter: {type: Stay}", 8, "'Stay' is not a FHIR R4 resource type"),
            ("encounter: {type: Encounter}", "encounter: {type: Encounter, ref: patient.gender}", 8, "ref must end at a Reference"),
            ("destination.receiver_her_id", "destination.colour", 15, "destination has name, queue, receiver_her_id"),
            ("text: Helsebro}", "text: {from: own.name}}", 13, "own has organisation_name, her_id"),
            ("encounter: {type: Encounter}", "own: {type: Encounter}", 8, "not `destination` or `own`"),
            ("type: {V: LOG_INNLAGT, DN: Melding om innlagt pasient}", "type: {V: LOG_INNLAGT}", 2, "type needs `DN`"),
        ],
    )
    def test_errors_point_at_file_line_col(self, tmp_path, old, new, line, words):
        """Each mistake is a MappingError naming the file, the line and what is wrong."""
        err = _error(tmp_path, old, new)
        assert err.file == str(tmp_path / "T.yaml")
        assert err.line == line and err.column >= 1
        assert words in err.reason
        assert str(err).startswith(f"{tmp_path / 'T.yaml'}:{line}:{err.column}: ")

    def test_yaml_syntax_error_has_position(self, tmp_path):
        """A YAML syntax error is reported at its line too."""
        err = _error(tmp_path, "{from: encounter.period.start, fn: datetime}", "{from: encounter.period.start[0, fn: datetime}")
        assert err.line == 21 and "YAML syntax" in err.reason

    def test_each_scope_is_checked_against_the_item_type(self, tmp_path):
        """Inside `each`, item paths are checked against the repeated element's FHIR type (Identifier here)."""
        body = "    - element: po:Ident\n      each: patient.identifier\n      as: ident\n      children:\n        - {element: po:Id, text: {from: ident.valu}}\n"
        with pytest.raises(MappingError) as info:
            _load(tmp_path, VALID + body)
        assert info.value.line == 26 and "Identifier has no element 'valu'" in info.value.reason

    def test_where_and_first_need_each(self, tmp_path):
        """`first` without `each` is an error, not silently ignored."""
        err = _error(tmp_path, "    - element: po:TidspunktForHendelse\n", "    - element: po:TidspunktForHendelse\n      first: true\n")
        assert err.line == 20 and "first belongs with `each`" in err.reason


class TestPaths:
    def test_first_repetition_unless_indexed(self):
        """A repeating element gives its first item; [n] (0-based) picks another; a missing one is None."""
        ctx = {"patient": {"name": [{"given": ["Kari", "Anne"]}, {"given": ["X"]}]}}
        assert compile_path(parse_path("patient.name.given"))(ctx) == "Kari"
        assert compile_path(parse_path("patient.name.given[1]"))(ctx) == "Anne"
        assert compile_path(parse_path("patient.name[1].given"))(ctx) == "X"
        assert compile_path(parse_path("patient.name.given[5]"))(ctx) is None
        assert compile_path(parse_path("patient.telecom.value"))(ctx) is None

    def test_whole_list_for_each(self):
        """For `each` the last step's repetitions come back as a list, and nothing as an empty one."""
        ctx = {"patient": {"identifier": [{"value": "1"}, {"value": "2"}]}, "hospital": None}
        assert len(compile_path(parse_path("patient.identifier"), whole_list=True)(ctx)) == 2
        assert compile_path(parse_path("hospital.identifier"), whole_list=True)(ctx) == []

    def test_not_a_path(self):
        """Anything but dotted names with optional indexes is refused."""
        assert parse_path("patient..name") is None and parse_path("patient.name[x]") is None


class TestFunctions:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("2025-01-10T08:25:00+01:00", "2025-01-10T08:25:00"),
            ("2025-07-03T12:00:00Z", "2025-07-03T14:00:00"),  # summer time in Oslo
            ("2025-01-10T07:25:00+00:00", "2025-01-10T08:25:00"),
            ("2025-01-10", "2025-01-10"),
            ("2025-01", "2025-01"),
            ("not a time", None),
        ],
    )
    def test_datetime_is_oslo_local(self, value, expected):
        """`datetime` writes Europe/Oslo wall time without an offset, keeps dates as they are, refuses junk."""
        assert xml_datetime(value) == expected

    def test_date(self):
        """`date` gives YYYY-MM-DD, the Oslo day of a dateTime, and None for a partial date."""
        assert xml_date("1961-06-15") == "1961-06-15"
        assert xml_date("2025-01-09T23:30:00+00:00") == "2025-01-10"
        assert xml_date("1961") is None

    @pytest.mark.parametrize(
        ("system", "code", "volven"),
        [
            ("urn:oid:2.16.578.1.12.4.1.4.1", "FNR", "2.16.578.1.12.4.1.1.8116"),
            ("urn:oid:2.16.578.1.12.4.1.4.2", "DNR", "2.16.578.1.12.4.1.1.8116"),
            ("urn:oid:2.16.578.1.12.4.1.4.4", "HPR", "2.16.578.1.12.4.1.1.8116"),
            ("urn:oid:2.16.578.1.12.4.1.2", "HER", "2.16.578.1.12.4.1.1.9051"),
            ("urn:oid:2.16.578.1.12.4.1.4.101", "ENH", "2.16.578.1.12.4.1.1.9051"),
        ],
    )
    def test_identifier_type_by_system(self, system, code, volven):
        """The KITH TypeId code, its display and its Volven list follow Identifier.system."""
        assert id_type(system) == code and id_type_list(system) == volven and id_type_name(system)

    def test_unknown_identifier_system(self):
        """A local system has no KITH code: the value is left out rather than guessed."""
        assert id_type("urn:oid:2.16.578.1.12.4.1.7.3.2.1") is None
