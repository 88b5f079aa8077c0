"""routes.yaml: the default route, checked fields, errors at file:line:col, conditions compiled at load."""

from __future__ import annotations

import pytest

from router.errors import ConfigError, MappingError
from router.routing import RoutesConfig, default_routes, load_routes
from router.settings import load_settings
from router.testing import isolated_settings


def _write(tmp_path, text: str):
    path = tmp_path / "routes.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _refused(tmp_path, text: str):
    """Write *text* as routes.yaml and load it; return its path and the MappingError's words."""
    path = _write(tmp_path, text)
    with pytest.raises(MappingError) as err:
        load_routes(path)
    return path, str(err.value)


class TestRoutesModel:
    def test_missing_file_means_everything_to_the_record(self, tmp_path):
        """Without routes.yaml there is one route, `default`, to the record."""
        settings = isolated_settings(tmp_path)
        assert settings.routes == default_routes()
        assert [r.to for r in settings.routes.routes] == [("record",)]

    def test_shipped_routes_yaml_loads(self):
        """config/routes.yaml as shipped passes its checks."""
        assert isinstance(load_settings(environ={}).routes, RoutesConfig)

    def test_unknown_key_points_at_its_line(self, tmp_path):
        """A typo in a route is an error at the route's file:line:col, never a silent default."""
        path, error = _refused(tmp_path, "destinations:\n  record: {kind: record}\nroutes:\n  - name: all\n    too: [record]\n")
        assert error.startswith(f"{path}:5:5: routes.0.too: Extra inputs are not permitted")

    def test_a_wrong_value_points_at_the_value(self, tmp_path):
        """A value the model refuses is named at its own line:column, not its key's (review H129)."""
        path, error = _refused(tmp_path, "destinations:\n  record: {kind: record}\nroutes:\n  - name: all\n    to: [record]\n    on_failure:\n      parc\n")
        assert error.startswith(f"{path}:7:7: routes.0.on_failure:"), error

    def test_a_routes_on_failure_without_a_queued_destination_is_refused(self, tmp_path):
        """A route's on_failure overrides only destinations of kind fhir: set on a route to the record and queues it did
        nothing, without a word (review H129). It is refused at its line."""
        path, error = _refused(tmp_path, (
            "destinations:\n  record: {kind: record}\n  pas: {kind: queue, queue: pas.in}\n"
            "routes:\n  - name: all\n    to: [record, pas]\n    on_failure: park\n"
        ))
        assert error.startswith(f"{path}:7:17: routes.0.on_failure: ") and "kind fhir" in error, error

    def test_a_routes_on_failure_with_a_queued_destination_loads(self, tmp_path):
        """With a fhir destination among its `to`, the route's on_failure is that destination's for its messages."""
        path = _write(tmp_path, (
            "destinations:\n  record: {kind: record}\n  lab: {kind: fhir, server: {base_url: 'https://lab.example.no/fhir'}}\n"
            "routes:\n  - {name: all, to: [record, lab], on_failure: park}\n"
        ))
        assert load_routes(path).routes[0].on_failure == "park"

    def test_undeclared_destination_is_refused(self, tmp_path):
        """A route to a destination nobody declared is an error."""
        path = _write(tmp_path, "destinations:\n  record: {kind: record}\nroutes:\n  - {name: all, to: [record, lab]}\n")
        with pytest.raises(MappingError, match="undeclared destination 'lab'"):
            load_routes(path)

    def test_a_cross_file_error_points_at_the_wrong_key_not_line_1(self, tmp_path):
        """An undeclared destination is reported at the route's `to` entry, where the operator must edit."""
        path, error = _refused(tmp_path, "destinations:\n  record: {kind: record}\nroutes:\n  - name: all\n    to: [record]\n  - name: lab\n    to: [lab]\n")
        assert error.startswith(f"{path}:7:10: routes.1.to.0:")

    def test_an_empty_routes_yaml_names_its_file(self, tmp_path):
        """A routes.yaml emptied by mistake is refused naming the file, not `?`."""
        path, error = _refused(tmp_path, "# everything commented out\n")
        assert error.startswith(f"{path}:1:1: destinations: Field required")

    def test_two_routes_of_one_name_are_refused(self, tmp_path):
        """Route names tell routes apart in logs and `filtered` outcomes: a copied route (or a YAML alias) must be renamed."""
        path = _write(tmp_path, "destinations:\n  record: {kind: record}\nroutes:\n  - &r\n    name: all\n    to: [record]\n  - *r\n")
        with pytest.raises(MappingError, match="route name 'all' is used already by route 1") as err:
            load_routes(path)
        assert f"{path}:5:" in str(err.value)

    def test_two_queue_destinations_on_one_queue_are_refused(self, tmp_path):
        """The receiver would get every message twice."""
        path = _write(tmp_path, "destinations:\n  a: {kind: queue, queue: q}\n  b: {kind: queue, queue: q}\nroutes:\n  - {name: all, to: [a, b]}\n")
        with pytest.raises(MappingError, match="destination 'a' publishes to queue 'q' already") as err:
            load_routes(path)
        assert str(err.value).startswith(f"{path}:3:")

    @pytest.mark.parametrize("queue", ["helsebro.in.hl7v2", "helsebro.in.hl7v2.p0", "helsebro.dlq", "helsebro.reply.hl7v2",
                                       "helsebro.reply.apprec.8094", "helsebro.dest.lab.p0", "amq.gen-x"])
    def test_a_queue_destination_on_helsebros_own_queue_is_refused(self, tmp_path, queue):
        """On the inbound queue every message would come back in for ever; on the others it would mix with their messages."""
        config_dir = tmp_path / "config"  # no engine.yaml: the default broker names
        config_dir.mkdir()
        (config_dir / "routes.yaml").write_text(
            f"destinations:\n  record: {{kind: record}}\n  legacy: {{kind: queue, queue: {queue}}}\nroutes:\n  - {{name: all, to: [record, legacy]}}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=r"routes\.yaml:3:\d+: destinations\.legacy\.queue: .* of Helsebro's own"):
            load_settings(environ={}, config_dir=str(config_dir))

    @pytest.mark.parametrize("name", ['"lab\\n"', "Lab", "-lab", '"lab,raw"', "l" * 41])
    def test_a_destination_name_is_lower_case_letters_digits_and_dashes_only(self, tmp_path, name):
        """It is part of queue names and of the journal's comma-separated list: a trailing newline is refused too."""
        path = _write(tmp_path, f"destinations:\n  record: {{kind: record}}\n  {name}: {{kind: queue, queue: q, format: passthrough}}\nroutes:\n  - {{name: all, to: [record]}}\n")
        with pytest.raises(MappingError, match="must be lower case letters, digits and dashes"):
            load_routes(path)

    def test_bad_condition_points_at_when(self, tmp_path):
        """A `when:` that does not compile is reported at its own line."""
        path = _write(tmp_path, "destinations:\n  record: {kind: record}\nroutes:\n  - name: all\n    match:\n      format: hl7v2\n      when: PV1-2 ==== I\n    to: [record]\n")
        with pytest.raises(MappingError) as err:
            load_routes(path)
        assert f"{path}:7:" in str(err.value)

    def test_when_needs_a_format(self, tmp_path):
        """A condition without `format` is refused: its paths would be ambiguous."""
        path = _write(tmp_path, "destinations:\n  record: {kind: record}\nroutes:\n  - {name: all, match: {when: PV1 valued}, to: [record]}\n")
        with pytest.raises(MappingError, match="needs `format`"):
            load_routes(path)

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ("format: passthrough, version: '2.3'", "hl7v2 and kith formats only"),
            ("format: kith", "needs `mapping`"),
            ("format: kith, mapping: X, charset: 8859/1", "hl7v2 format only"),
            ("format: hl7v2, version: '3.0'", "version"),
            ("format: kith, mapping: X, receiving_application: LAB", "receiving_application: .* apply to the hl7v2 format only"),
            ("format: kith, mapping: X, receiving_facility: STOLAV", "receiving_facility: .* apply to the hl7v2 format only"),
            ("format: hl7v2, receiver_name: Testkommune", "receiver_name: receiver_her_id and receiver_name apply to the kith format only"),
            ("format: hl7v2, receiver_her_id: '12345'", "receiver_her_id: receiver_her_id and receiver_name apply to the kith format only"),
            ("format: fhir-json, receiver_name: Testkommune", "receiver_name: .*hl7v2 and kith formats only"),
            ("format: hl7v2, receiving_facility: 'A^B'", "receiving_facility"),
        ],
        ids=[
            "version-on-passthrough", "kith-without-mapping", "charset-on-kith", "bad-version", "receiving-application-on-kith",
            "receiving-facility-on-kith", "receiver-name-on-hl7v2", "receiver-her-id-on-hl7v2", "receiver-name-on-fhir-json", "delimiter-in-facility",
        ],
    )
    def test_render_options_must_fit_the_format(self, tmp_path, options, message):
        """Rendering options are refused where the format has no use for them, naming the line."""
        path = _write(tmp_path, f"destinations:\n  pas: {{kind: queue, queue: pas.in, {options}}}\nroutes:\n  - {{name: all, to: [pas]}}\n")
        with pytest.raises(MappingError, match=message) as err:
            load_routes(path)
        assert f"{path}:2:" in str(err.value)

    def test_receiver_options_load_for_their_format(self, tmp_path):
        """receiving_application/receiving_facility on an hl7v2 destination and receiver_name on a kith one are accepted."""
        path = _write(tmp_path, (
            "destinations:\n"
            "  lab: {kind: queue, queue: lab.in, format: hl7v2, receiving_application: LABSYS, receiving_facility: STOLAV}\n"
            "  kommune: {kind: queue, queue: k.in, format: kith, mapping: X, receiver_her_id: '12345', receiver_name: Testkommune}\n"
            "routes:\n  - {name: all, to: [lab, kommune]}\n"
        ))
        config = load_routes(path)
        lab, kommune = config.destinations["lab"], config.destinations["kommune"]
        assert (lab.receiving_application, lab.receiving_facility, kommune.receiver_name) == ("LABSYS", "STOLAV", "Testkommune")

    def test_load_settings_reports_routes_errors_as_config_errors(self, tmp_path):
        """A broken routes.yaml stops start-up with a ConfigError naming the file."""
        settings = isolated_settings(tmp_path)
        (settings.config_dir / "routes.yaml").write_text("routes: 3\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=r"routes\.yaml"):
            load_settings(environ={}, config_dir=str(settings.config_dir))


    @pytest.mark.parametrize(
        ("match", "message"),
        [
            ("{format: kith, event: [A01]}", "event: .*KITH"),
            ("{format: hl7v2, message_code: ['ADT^A01']}", "message_code: .*'ADT\\^A01'"),
            ("{format: hl7v2, message_code: [ADT_A01]}", "message_code: .*'ADT_A01'"),
            ("{format: hl7v2, event: ['A01 ']}", "event: .*'A01 '"),
            ("{format: hl7v2, event: ['']}", "event: "),
        ],
        ids=["event-on-kith", "code-with-event", "structure-as-code", "space-in-event", "empty-event"],
    )
    def test_a_match_that_can_never_match_is_refused(self, tmp_path, match, message):
        """A route no message can take settled everything it was meant for as `filtered`, answered AA, sent nowhere."""
        path = _write(tmp_path, f"destinations:\n  record: {{kind: record}}\nroutes:\n  - name: adt\n    match: {match}\n    to: [record]\n")
        with pytest.raises(MappingError, match=message) as err:
            load_routes(path)
        assert str(err.value).startswith(f"{path}:5:")

    @pytest.mark.parametrize("key", ["message_code", "event", "sender", "receiver"])
    def test_an_empty_list_is_refused_not_read_as_match_all(self, tmp_path, key):
        """`message_code: []` matched every message, as an absent key does: a route meant for nothing (or for a list
        an author emptied) took everything. An empty list is refused at its line; leave the key out to match all."""
        path = _write(tmp_path, f"destinations:\n  record: {{kind: record}}\nroutes:\n  - name: adt\n    match: {{format: hl7v2, {key}: []}}\n    to: [record]\n")
        with pytest.raises(MappingError, match=rf"{key}: .*empty list") as err:
            load_routes(path)
        assert str(err.value).startswith(f"{path}:5:")

    def test_hl7v2_codes_and_kith_types_load(self, tmp_path):
        """Three-character HL7 codes and events, in either case, and a KITH message type, are accepted."""
        path = _write(tmp_path, (
            "destinations:\n  record: {kind: record}\nroutes:\n"
            "  - {name: adt, match: {format: hl7v2, message_code: [adt, ZXX], event: [A01, z99]}, to: [record]}\n"
            "  - {name: plo, match: {format: kith, message_code: [DIALOG_HELSEFAGLIG]}, to: [record]}\n"
        ))
        assert [r.name for r in load_routes(path).routes] == ["adt", "plo"]

    @pytest.mark.parametrize("delays", ["[1, -5]", "[0]", "[.nan]", "[.inf]", "[30000000]"], ids=["negative", "zero", "nan", "inf", "past-rabbitmq-ttl"])
    def test_a_retry_delay_that_is_not_a_positive_finite_wait_is_refused(self, tmp_path, delays):
        """A retry step becomes a queue's x-message-ttl: a negative, NaN or too long one failed at declare or publish, long after load."""
        path = _write(tmp_path, (
            "destinations:\n  record: {kind: record}\n"
            f"  ext:\n    kind: fhir\n    server: {{base_url: 'http://x/fhir'}}\n    retry: {{delays_seconds: {delays}}}\n"
            "routes:\n  - {name: all, to: [record, ext]}\n"
        ))
        with pytest.raises(MappingError, match="delays_seconds") as err:
            load_routes(path)
        assert str(err.value).startswith(f"{path}:6:")


class TestShippedExample:
    def test_the_commented_example_in_config_routes_yaml_loads(self, tmp_path):
        """The example in config/routes.yaml's comments passes the same checks as the live routes."""
        from router.settings import PROJECT_ROOT

        lines = (PROJECT_ROOT / "config" / "routes.yaml").read_text(encoding="utf-8").splitlines()
        start = lines.index("# destinations:")
        example = []
        for line in lines[start:]:
            if not line.startswith("#"):
                break
            example.append(line[2:])
        config = load_routes(_write(tmp_path, "\n".join(example) + "\n"))
        assert config.queued() == ("lab-fhir",)


class TestKithConditions:
    @pytest.mark.parametrize("path", ["$who", "//*[foo()]"])
    def test_an_xpath_that_can_never_run_is_refused_at_load(self, tmp_path, path):
        """lxml compiles an unbound variable or an unknown function and fails only on a message: every KITH message would be dead-lettered `internal`."""
        text = f"destinations:\n  record: {{kind: record}}\nroutes:\n  - name: kith\n    match: {{format: kith, when: '`{path}` valued'}}\n    to: [record]\n"
        path_ = _write(tmp_path, text)
        with pytest.raises(MappingError, match=r"route kith: when: .*failed") as err:
            load_routes(path_)
        assert str(err.value).startswith(f"{path_}:5:")

    def test_an_xpath_that_runs_loads(self, tmp_path):
        """A namespaced path and an XPath function of the standard library are fine on any message."""
        from router.settings import PROJECT_ROOT

        text = "destinations:\n  record: {kind: record}\nroutes:\n  - name: kith\n    match: {format: kith, when: '`count(//*)` != 0 or `name(/*)` = x or `//mh:MsgHead/@V` valued'}\n    to: [record]\n"
        assert load_routes(_write(tmp_path, text), mappings_dir=PROJECT_ROOT / "mappings").routes[0].name == "kith"
