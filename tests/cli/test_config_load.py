"""Config errors every verb that loads the settings names at routes.yaml's or engine.yaml's file:line:col (review H191)."""

from __future__ import annotations

import pytest

from router.cli import main

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
