"""Config errors every verb that loads the settings names at routes.yaml's or engine.yaml's file:line:col (review H191)."""

from __future__ import annotations

import pytest

from router.cli import main
from router.settings import PROJECT_ROOT

_VERBS = [["status"], ["mappings", "lint"], ["run", "--until-idle", "1"]]


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    """An empty config folder exported as HELSEBRO_CONFIG_DIR, with a data folder of its own."""
    folder = tmp_path / "config"
    folder.mkdir()
    for name in ("HELSEBRO_BROKER_URL", "HELSEBRO_RECORD_URL", "HELSEBRO_XSD_DIR", "HELSEBRO_MAPPINGS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HELSEBRO_CONFIG_DIR", str(folder))
    monkeypatch.setenv("HELSEBRO_DATA_DIR", str(tmp_path / "data"))
    return folder


class TestRoutesRefusedAtLoad:
    @pytest.mark.parametrize("verb", _VERBS, ids=lambda v: v[0])
    @pytest.mark.parametrize(
        ("options", "value", "words"),
        [
            ("format: hl7v2, mapping: ADT_A99", "ADT_A99", "destinations.lab.mapping: no outbound hl7v2 mapping 'ADT_A99'"),
            ("format: kith, mapping: PLO_Mangler", "PLO_Mangler", "destinations.lab.mapping: no outbound kith mapping 'PLO_Mangler'"),
            ("format: hl7v2, charset: latin-1", "latin-1", "'latin-1' is not a charset an hl7v2 destination may name"),
            ("format: hl7v2, version: '2.9'", "'2.9'", "HL7 version 2.9 is not known"),
        ],
        ids=["hl7v2-mapping", "kith-mapping", "charset", "version"],
    )
    def test_a_destination_that_cannot_render_is_refused_at_its_line(self, config_dir, capsys, verb, options, value, words):
        """A destination naming an outbound mapping that does not exist, a charset or an HL7 version the renderer
        cannot write loaded fine and was refused only when `helsebro run` began delivering, naming the destination.
        Every verb that loads the routes now refuses it at routes.yaml's line and column, exit 2."""
        routes = config_dir / "routes.yaml"
        line = f"  lab: {{kind: queue, queue: lab.in, {options}}}"
        column = line.index(value) + 1  # at the value the author has to change
        routes.write_text(
            "destinations:\n  record: {kind: record}\n"
            f"{line}\n"
            "routes:\n  - {name: all, to: [record, lab]}\n",
            encoding="utf-8",
        )
        capsys.readouterr()
        assert main(verb) == 2
        err = capsys.readouterr().err
        assert f"{routes}:3:{column}: " in err and words in err, err


class TestNumbersAreNumbers:
    @pytest.mark.parametrize("verb", _VERBS[:2], ids=lambda v: v[0])
    @pytest.mark.parametrize(
        ("file", "text", "where", "words"),
        [
            ("engine.yaml", 'broker:\n  prefetch: "10"\n', "2:13: broker.prefetch", "'10' is text, not a number: write the number without quotes"),
            ("engine.yaml", "mappings:\n  reload_seconds: '2.5'\n", "2:19: mappings.reload_seconds", "'2.5' is text, not a number"),
            ("engine.yaml", "broker:\n  reconnect_max_seconds: .nan\n", "2:26: broker.reconnect_max_seconds", "finite number"),
            ("engine.yaml", "broker:\n  reconnect_max_seconds: .inf\n", "2:26: broker.reconnect_max_seconds", "finite number"),
            ("routes.yaml", "destinations:\n  record: {kind: record}\nroutes:\n  - {name: all, to: [record]}\nduplicates:\n  window_seconds: '60'\n",
             "6:19: duplicates.window_seconds", "'60' is text, not a number"),
            ("routes.yaml", "destinations:\n  record: {kind: record}\n  lab:\n    kind: fhir\n    server: {base_url: 'https://lab.example.no/fhir'}\n"
             "    retry: {delays_seconds: [1, '5']}\nroutes:\n  - {name: all, to: [record, lab]}\n",
             "6:33: destinations.lab.retry.delays_seconds.1", "'5' is text, not a number"),
        ],
        ids=["quoted-int", "quoted-float", "nan", "inf", "routes-quoted-int", "routes-quoted-list-item"],
    )
    def test_text_or_nan_for_a_number_is_refused_in_plain_words(self, config_dir, capsys, verb, file, text, where, words):
        """Review H191: pydantic took `prefetch: "10"` as 10, so a quoted number loaded (and a quoted `when` or mapping
        value elsewhere did not); `.nan` was refused as "less than or equal to 600", naming the bound, not the value.
        Each is now refused at its file:line:col, saying what is wrong with it, exit 2."""
        (config_dir / file).write_text(text, encoding="utf-8")
        capsys.readouterr()
        assert main(verb) == 2
        err = capsys.readouterr().err
        assert f"{config_dir / file}:{where}: " in err and words in err, err
        assert "less than" not in err and "greater than" not in err, err

    def test_a_number_written_as_one_loads(self, config_dir, capsys):
        """The same settings written as numbers load: `helsebro mappings lint` of the shipped mappings passes."""
        (config_dir / "engine.yaml").write_text("broker:\n  prefetch: 10\n  reconnect_max_seconds: 2.5\n", encoding="utf-8")
        (config_dir / "routes.yaml").write_text(
            "destinations:\n  record: {kind: record}\n  lab:\n    kind: fhir\n    server: {base_url: 'https://lab.example.no/fhir'}\n"
            "    retry: {delays_seconds: [1, 5.5]}\nroutes:\n  - {name: all, to: [record, lab]}\nduplicates:\n  window_seconds: 60\n",
            encoding="utf-8",
        )
        assert main(["mappings", "lint"]) == 0, capsys.readouterr().err


class TestConnectionSettingsLiveInTheEnvironment:
    @pytest.mark.parametrize(("key", "variable"), [("broker_url", "HELSEBRO_BROKER_URL"), ("record_url", "HELSEBRO_RECORD_URL"),
                                                  ("data_dir", "HELSEBRO_DATA_DIR")])
    def test_a_connection_setting_in_engine_yaml_names_its_variable(self, config_dir, capsys, key, variable):
        """Review H191: `broker_url:` written in engine.yaml was refused as "Extra inputs are not permitted", which did
        not say where it belongs; it now names the environment variable (README says they are environment-only)."""
        (config_dir / "engine.yaml").write_text(f"broker:\n  prefetch: 10\n{key}: x\n", encoding="utf-8")
        capsys.readouterr()
        assert main(["status"]) == 2
        err = capsys.readouterr().err
        assert f"{config_dir / 'engine.yaml'}:3:1: {key}: not an engine.yaml setting: set {variable} in the environment" in err, err

    def test_a_relative_data_dir_is_relative_to_the_working_directory(self, config_dir, tmp_path, monkeypatch, capsys):
        """README: a relative HELSEBRO_DATA_DIR is taken from the folder the command runs in, not the config folder."""
        work = tmp_path / "work"
        work.mkdir()
        monkeypatch.chdir(work)
        monkeypatch.setenv("HELSEBRO_DATA_DIR", "state")
        capsys.readouterr()
        assert main(["status", "--interval", "0"]) == 0
        out = capsys.readouterr().out
        assert f"{work / 'state' / 'broker'}" in out and str(config_dir / "state") not in out, out


def _route_when(match: str) -> str:
    """routes.yaml with one route whose `match:` is *match*, on line 5."""
    return f"destinations:\n  record: {{kind: record}}\nroutes:\n  - name: picked\n    match: {match}\n    to: [record]\n"


_EXAMPLE = str(PROJECT_ROOT / "examples" / "hl7v2" / "01_A01_admit_nordmann.hl7")


class TestRouteConditionsCheckedAsMappings:
    @pytest.mark.parametrize("verb", [*_VERBS, ["convert", _EXAMPLE]], ids=lambda v: v[0])
    @pytest.mark.parametrize(
        ("match", "words"),
        [
            ('{format: hl7v2, when: "PID-99 valued"}', "PID-99 does not exist"),
            ('{format: hl7v2, message_code: [ADT], when: "PV9-2 = I"}', "PV9 is not an HL7 v2 segment"),
            ('{format: hl7v2, message_code: [ADT], when: "OBR-4 valued"}', "no ADT message structure has the OBR segment"),
            ('{format: hl7v2, message_code: [adt], when: "ORDER_OBSERVATION[*].OBX-5 = X"}', "no ADT message structure has the ORDER_OBSERVATION group"),
        ],
        ids=["field-past-end", "unknown-segment", "segment-not-in-code", "group-not-in-code"],
    )
    def test_a_path_lint_refuses_in_a_mapping_is_refused_in_a_route(self, config_dir, capsys, verb, match, words):
        """A route's `when:` naming a field past its segment's end, a segment HL7 lacks, or one no structure of the
        route's message code holds loaded silently and never matched: every message meant for it was `filtered`.
        Every verb that loads the routes now refuses it at the `when:`'s line and column, exit 2, as lint refuses it
        in a mapping."""
        routes = config_dir / "routes.yaml"
        routes.write_text(_route_when(match), encoding="utf-8")
        column = _route_when(match).splitlines()[4].index('"') + 1
        capsys.readouterr()
        assert main(verb) == 2
        err = capsys.readouterr().err
        assert f"{routes}:5:{column}: route picked: when: " in err and words in err, err

    @pytest.mark.parametrize(
        "match",
        [
            '{format: hl7v2, message_code: [ADT], event: [A01, A04], when: "PV1-2 = I and PID-3 valued"}',
            '{format: hl7v2, message_code: [ADT], when: "ZPV-3 = X"}',
            '{format: hl7v2, when: "ZZZ-99 valued or OBR-4 valued"}',
            '{format: hl7v2, message_code: [ADT, ORU], when: "OBR-4 valued"}',
            '{format: hl7v2, message_code: [ORU], when: "ORDER_OBSERVATION[*].OBX-5 = X"}',
            '{format: hl7v2, message_code: [ZLA], when: "OBR-4 valued"}',
            '{format: hl7v2, message_code: [ADT], when: "INSURANCE[*].IN1-2 valued"}',
        ],
        ids=["standard", "z-segment", "no-code", "one-code-holds-it", "group", "site-message-code", "adt-group"],
    )
    def test_a_path_some_message_of_the_route_can_hold_loads(self, config_dir, capsys, match):
        """A Z-segment (the site's own, anywhere), a path one of the route's message codes holds, and any standard path on
        a route naming no code (or a code HL7 defines no structure for) load: the same rules as a mapping template's."""
        (config_dir / "routes.yaml").write_text(_route_when(match), encoding="utf-8")
        assert main(["mappings", "lint"]) == 0, capsys.readouterr().err
        assert main(["status", "--interval", "0"]) == 0, capsys.readouterr().err


class TestFhirServerNumbersAreNumbers:
    @pytest.mark.parametrize("verb", _VERBS, ids=lambda v: v[0])
    @pytest.mark.parametrize(
        ("setting", "value", "where", "words"),
        [
            ('timeout_seconds: "30"', '"30"', "server.timeout_seconds", "'30' is text, not a number"),
            ("timeout_seconds: .nan", ".nan", "server.timeout_seconds", "finite number"),
            ("timeout_seconds: true", "true", "server.timeout_seconds", "valid number"),
            ("max_attempts: '3'", "'3'", "server.max_attempts", "'3' is text, not a number"),
            ("auth: {type: oauth2, token_url: 'https://auth.example.no/t', client_id: h, client_secret_env: S, refresh_margin_seconds: '5'}",
             "'5'", "refresh_margin_seconds", "'5' is text, not a number"),
        ],
        ids=["quoted", "nan", "true", "quoted-int", "auth-quoted"],
    )
    def test_text_nan_or_true_for_a_server_number_is_refused(self, config_dir, capsys, verb, setting, value, where, words):
        """A FHIR destination's server block (and its auth) took `timeout_seconds: "30"`, `.nan` and `true` (one second)
        where the retry block beside it refused them; each is now refused at routes.yaml's line and column, exit 2."""
        routes = config_dir / "routes.yaml"
        column = len("      ") + setting.rindex(value) + 1  # at the value the author has to change
        routes.write_text(
            "destinations:\n  record: {kind: record}\n  lab:\n    kind: fhir\n    server:\n"
            f"      base_url: 'https://lab.example.no/fhir'\n      {setting}\nroutes:\n  - {{name: all, to: [record, lab]}}\n",
            encoding="utf-8",
        )
        capsys.readouterr()
        assert main(verb) == 2
        err = capsys.readouterr().err
        assert f"{routes}:7:{column}: destinations.lab." in err and where in err and words in err, err

    def test_server_numbers_written_as_numbers_load(self, config_dir, capsys):
        """The same server block with numbers written as numbers loads."""
        (config_dir / "routes.yaml").write_text(
            "destinations:\n  record: {kind: record}\n  lab:\n    kind: fhir\n    server:\n"
            "      base_url: 'https://lab.example.no/fhir'\n      timeout_seconds: 30\n      max_attempts: 3\n"
            "      auth: {type: oauth2, token_url: 'https://auth.example.no/t', client_id: h, client_secret_env: S, refresh_margin_seconds: 5.5}\n"
            "routes:\n  - {name: all, to: [record, lab]}\n",
            encoding="utf-8",
        )
        assert main(["mappings", "lint"]) == 0, capsys.readouterr().err
