"""Tests for router/settings.py: the `own` block of config/engine.yaml (Helsebro's names in rendered messages)."""

from __future__ import annotations

import pytest
import yaml

from router.errors import ConfigError
from router.settings import PLACEHOLDER_HER_ID, OwnConfig, load_settings
from router.testing import isolated_settings


def _with_engine(tmp_path, **blocks):
    """Settings read from a copy of the shipped engine.yaml with *blocks* replaced."""
    config_dir = isolated_settings(tmp_path).config_dir
    engine = config_dir / "engine.yaml"
    raw = yaml.safe_load(engine.read_text(encoding="utf-8"))
    raw.update(blocks)
    engine.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_settings(environ={}, config_dir=str(config_dir))


class TestOwnConfig:
    def test_shipped_engine_yaml_matches_the_defaults(self):
        """config/engine.yaml's `own` block loads and says what the model defaults to, so the file documents the truth."""
        assert load_settings(environ={}).engine.own == OwnConfig()
        assert OwnConfig().application == "HELSEBRO" and OwnConfig().facility is None and OwnConfig().her_id == PLACEHOLDER_HER_ID

    def test_values_from_engine_yaml(self, tmp_path):
        """Names set under `own` in engine.yaml reach the settings."""
        own = {"application": "HBRO", "facility": "HBRO-FAC", "organisation_name": "Testsykehuset integrasjon", "her_id": "998877"}
        assert _with_engine(tmp_path, own=own).engine.own == OwnConfig(**own)

    @pytest.mark.parametrize(
        ("own", "where"),
        [
            ({"application": "HB^RO"}, "own.application"),
            ({"application": "A" * 21}, "own.application"),
            ({"facility": "X|Y"}, "own.facility"),
            ({"her_id": "HER-1"}, "own.her_id"),
            ({"organisation_name": ""}, "own.organisation_name"),
            ({"name": "Helsebro"}, "own.name"),
        ],
        ids=["delimiter", "too-long", "pipe", "her-id-not-digits", "empty-name", "unknown-key"],
    )
    def test_wrong_values_refuse_to_start(self, tmp_path, own, where):
        """A value HL7 or MsgHead cannot carry, or an unknown key, stops the start with a ConfigError naming the key."""
        with pytest.raises(ConfigError, match=rf"engine\.yaml:\d+:\d+: {where}:"):
            _with_engine(tmp_path, own=own)


class TestEngineYamlErrors:
    @pytest.mark.parametrize(
        ("text", "line", "what"),
        [
            ("broker:\n  prefetch: 200\n  batch_maxx: 5\n", 3, "batch_maxx"),
            ("broker:\n  prefetch: -1\n", 2, "prefetch"),
            ("own:\n  application: HELSEBRO\n  her_id: abc\n", 3, "her_id"),
        ],
        ids=["typo", "out-of-range", "bad-her-id"],
    )
    def test_names_file_line_and_column(self, tmp_path, text, line, what):
        """A key or value engine.yaml's model refuses is reported at file:line:col, naming the key."""
        (tmp_path / "engine.yaml").write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as err:
            load_settings(environ={}, config_dir=str(tmp_path))
        assert f"{tmp_path / 'engine.yaml'}:{line}:" in str(err.value) and what in str(err.value)

    @pytest.mark.parametrize(
        ("text", "place", "what"),
        [
            ("broker:\n  prefetch: -1\n", "2:13", "broker.prefetch"),
            ("broker:\n  prefetch:\n    -1\n", "3:5", "broker.prefetch"),
            ("own:\n  her_id: abc\n", "2:11", "own.her_id"),
            ("broker:\n  prefetch: 5\n  batch_maxx: 5\n", "3:3", "broker.batch_maxx"),
        ],
        ids=["value", "value-on-its-own-line", "pattern", "typo-at-the-key"],
    )
    def test_a_wrong_value_is_reported_at_the_value(self, tmp_path, text, place, what):
        """A value the model refuses is reported at the value's line:column (where the operator edits), an unknown
        key at the key's (review H129: both were at the key's column, so a value on its own line was named a line off)."""
        (tmp_path / "engine.yaml").write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as err:
            load_settings(environ={}, config_dir=str(tmp_path))
        assert str(err.value).startswith(f"{tmp_path / 'engine.yaml'}:{place}: {what}:"), err.value

    def test_yaml_syntax_error_has_a_place(self, tmp_path):
        """A YAML syntax error in engine.yaml names its line too."""
        (tmp_path / "engine.yaml").write_text("broker:\n  prefetch: [1\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=r"engine\.yaml:\d+:\d+: YAML syntax"):
            load_settings(environ={}, config_dir=str(tmp_path))


class TestValuesUsedOnlyPerMessage:
    """Values read only when a message arrives are checked at load, or every message fails with a traceback."""

    @pytest.mark.parametrize(
        ("text", "line", "where"),
        [
            ("hl7v2:\n  default_charset: utf8x\n", 2, "hl7v2.default_charset"),
            ("hl7v2:\n  default_charset: rot13\n", 2, "hl7v2.default_charset"),
            ("hl7v2:\n  senders:\n    LEGACYPAS:\n      charset: latin-9x\n", 4, "hl7v2.senders.LEGACYPAS.charset"),
        ],
        ids=["unknown-codec", "not-a-text-codec", "sender-codec"],
    )
    def test_a_charset_python_cannot_decode_with_is_refused(self, tmp_path, text, line, where):
        """A misspelt charset used to load, then broke every message without MSH-18 with LookupError."""
        (tmp_path / "engine.yaml").write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=rf"engine\.yaml:{line}:\d+: {where}: .*charset"):
            load_settings(environ={}, config_dir=str(tmp_path))

    def test_a_known_charset_loads(self, tmp_path):
        (tmp_path / "engine.yaml").write_text("hl7v2:\n  default_charset: ISO-8859-1\n  senders:\n    X:\n      charset: cp1252\n", encoding="utf-8")
        assert load_settings(environ={}, config_dir=str(tmp_path)).engine.hl7v2.default_charset == "ISO-8859-1"

    @pytest.mark.parametrize(
        "template",
        ["urn:helsebro:local:{authorty}:{type}", "urn:helsebro:local:{authority}:{type", "urn:helsebro:local:{0}:{type}", "urn:helsebro:local:{type}"],
        ids=["misspelt-field", "unclosed-brace", "positional", "no-authority"],
    )
    def test_a_local_system_template_that_cannot_fill_in_is_refused(self, tmp_path, template):
        """A typo in identifiers.default_local_system used to load, then failed every message with KeyError;
        one without {authority} would give every hospital's numbers one system."""
        (tmp_path / "engine.yaml").write_text(f"identifiers:\n  default_local_system: \"{template}\"\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=r"engine\.yaml:2:\d+: identifiers\.default_local_system: "):
            load_settings(environ={}, config_dir=str(tmp_path))

    def test_a_local_system_template_with_its_fields_loads(self, tmp_path):
        (tmp_path / "engine.yaml").write_text("identifiers:\n  default_local_system: \"urn:x:{authority}\"\n", encoding="utf-8")
        assert load_settings(environ={}, config_dir=str(tmp_path)).engine.identifiers.default_local_system == "urn:x:{authority}"


class TestFolderSettings:
    @pytest.mark.parametrize("variable", ["HELSEBRO_CONFIG_DIR", "HELSEBRO_MAPPINGS_DIR", "HELSEBRO_XSD_DIR"])
    def test_a_folder_setting_that_names_no_folder_is_refused(self, tmp_path, variable):
        """A misspelt HELSEBRO_CONFIG_DIR used to run on the defaults (everything to the record, no identifier
        systems) without a word; a misspelt mappings or schema folder showed up only per message, or as `on` in status."""
        with pytest.raises(ConfigError, match=rf"{variable} {tmp_path / 'nope'}: no such folder"):
            load_settings(environ={variable: str(tmp_path / "nope")})

    def test_folder_settings_that_exist_load(self, tmp_path):
        settings = load_settings(environ={"HELSEBRO_CONFIG_DIR": str(tmp_path), "HELSEBRO_XSD_DIR": str(tmp_path)})
        assert (settings.config_dir, settings.xsd_dir) == (tmp_path, tmp_path)


class TestValueTypes:
    @pytest.mark.parametrize(
        ("file", "text", "line", "where"),
        [
            ("engine.yaml", "broker:\n  prefetch: true\n", 2, "broker.prefetch"),
            ("engine.yaml", "mappings:\n  reload_seconds: false\n", 2, "mappings.reload_seconds"),
            ("routes.yaml", "destinations:\n  record: {kind: record}\nroutes:\n  - {name: all, to: [record]}\nduplicates:\n  window_seconds: true\n", 6, "duplicates.window_seconds"),
        ],
        ids=["int", "float", "routes-int"],
    )
    def test_true_or_false_for_a_number_is_refused(self, tmp_path, file, text, line, where):
        """Pydantic read `true` for a number as 1: `window_seconds: true` loaded as a one-second duplicate window,
        `reload_seconds: false` turned hot reload off. A boolean is never a number in config: refused at file:line."""
        config_dir = isolated_settings(tmp_path).config_dir
        (config_dir / file).write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=rf"{file}:{line}:\d+: {where}: .*valid (integer|number)"):
            load_settings(environ={}, config_dir=str(config_dir))


class TestEnvironment:
    def test_blank_values_are_unset(self, tmp_path):
        """A variable holding only spaces (an empty line from a file) counts as unset, as an empty one does."""
        settings = load_settings(environ={"HELSEBRO_BROKER_URL": "  ", "HELSEBRO_DATA_DIR": "\t", "HELSEBRO_RECORD_URL": " \n"})
        assert (settings.broker_url, settings.record_url) == (None, None)
        assert settings.data_dir == load_settings(environ={}).data_dir

    def test_spaces_around_a_url_or_folder_are_not_part_of_it(self, tmp_path):
        settings = load_settings(environ={"HELSEBRO_BROKER_URL": " amqp://guest@127.0.0.1:5672/%2F\n", "HELSEBRO_DATA_DIR": f" {tmp_path} "})
        assert (settings.broker_url, settings.data_dir) == ("amqp://guest@127.0.0.1:5672/%2F", tmp_path)


class TestConnectionUrls:
    @pytest.mark.parametrize(
        ("variable", "value", "what"),
        [
            ("HELSEBRO_BROKER_URL", "guest:s3cret@rabbit:5672/%2F", "amqp://"),
            ("HELSEBRO_BROKER_URL", "http://guest:s3cret@rabbit:5672/", "amqp://"),
            ("HELSEBRO_BROKER_URL", "amqp://guest:s3cret@rabbit:99999/%2F", "port"),
            ("HELSEBRO_BROKER_URL", "amqp://guest:s3cret@rabbit:56x2/%2F", "port"),
            ("HELSEBRO_RECORD_URL", "mysql://guest:s3cret@db/x", "postgresql://"),
            ("HELSEBRO_RECORD_URL", "record.sqlite3", "postgresql://"),
        ],
        ids=["no-scheme", "http", "port-out-of-range", "port-not-a-number", "mysql", "bare-path"],
    )
    def test_a_url_that_cannot_work_is_refused_at_load(self, variable, value, what):
        """A broker URL without amqp:// ran on as an outage, retried forever (`not-a-url` was looked up as a host);
        a port out of range ended `helsebro run` with a traceback. Now each is a ConfigError naming the variable,
        never echoing the URL (it carries the password)."""
        with pytest.raises(ConfigError, match=rf"^{variable}: .*{what}") as err:
            load_settings(environ={variable: value})
        assert "s3cret" not in str(err.value)

    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            ("HELSEBRO_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
            ("HELSEBRO_BROKER_URL", "amqps://rabbit.example.no/prod"),
            ("HELSEBRO_RECORD_URL", "postgresql://postgres@127.0.0.1:5432/test?schema=x"),
            ("HELSEBRO_RECORD_URL", "postgres://postgres@127.0.0.1/test"),
            ("HELSEBRO_RECORD_URL", "sqlite:////tmp/record.sqlite3"),
        ],
    )
    def test_urls_the_engine_can_use_load(self, variable, value):
        settings = load_settings(environ={variable: value})
        assert value in (settings.broker_url, settings.record_url)


class TestQueueNamesAndSystems:
    @pytest.mark.parametrize(
        ("text", "place", "where"),
        [
            ("broker:\n  names:\n    inbound: \"\"\n", "3:14", "broker.names.inbound"),
            ("broker:\n  names:\n    exchange: \"\"\n", "3:15", "broker.names.exchange"),
            ("identifiers:\n  authorities:\n    AHUS: \"\"\n", "3:11", "identifiers.authorities.AHUS"),
            ("identifiers:\n  authorities:\n    AHUS: \"urn:oid: 2.16\"\n", "3:11", "identifiers.authorities.AHUS"),
        ],
        ids=["empty-queue", "empty-exchange", "empty-system", "space-in-system"],
    )
    def test_a_name_or_system_that_cannot_work_is_refused(self, tmp_path, text, place, where):
        """An empty inbound queue name loaded and `helsebro run` consumed a queue named "" (RabbitMQ makes a
        server-named one: nothing ever arrives); an empty exchange published to the default exchange; an empty
        identifier system wrote Identifier.system "" (not a FHIR uri) on every patient of that authority."""
        (tmp_path / "engine.yaml").write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as err:
            load_settings(environ={}, config_dir=str(tmp_path))
        assert str(err.value).startswith(f"{tmp_path / 'engine.yaml'}:{place}: {where}:"), err.value


class TestWholeFile:
    @pytest.mark.parametrize("text", ["- broker\n- own\n", "broker\n"], ids=["list", "scalar"])
    def test_a_file_that_is_not_a_mapping_says_so(self, tmp_path, text):
        """engine.yaml holding a list or a word was reported as `engine.yaml:1:1: : Input should be a valid dictionary
        or instance of EngineConfig`: an empty key and a class name. Now it says what the file must hold."""
        (tmp_path / "engine.yaml").write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as err:
            load_settings(environ={}, config_dir=str(tmp_path))
        assert str(err.value) == f"{tmp_path / 'engine.yaml'}:1:1: the file must be a mapping of blocks (broker:, hl7v2:, …), not a list or a value"


class TestRecordConfig:
    def test_the_shipped_lock_wait_is_ten_seconds(self):
        """config/engine.yaml's `record` block says what the model defaults to."""
        assert load_settings(environ={}).sqlite_busy_timeout == 10.0

    def test_a_lock_wait_from_engine_yaml_is_read(self, tmp_path):
        assert _with_engine(tmp_path, record={"sqlite_busy_timeout": 0.25}).sqlite_busy_timeout == 0.25

    @pytest.mark.parametrize("record", [{"sqlite_busy_timeout": 0}, {"sqlite_busy_timeout": -1}, {"sqlite_busy_timeout": 601},
                                        {"sqlite_busy_timeout": "soon"}, {"sqlite_busy_timeout": True}, {"busy_timeout": 1}])
    def test_a_lock_wait_that_cannot_work_refuses_to_start(self, tmp_path, record):
        """No wait at all, a negative or endless one, a word, or a misspelt key is refused at load, naming its place."""
        with pytest.raises(ConfigError, match=r"engine\.yaml:\d+:\d+: record\."):
            _with_engine(tmp_path, record=record)


class TestWorkersConfig:
    def test_the_shipped_first_restart_delay_is_one_second(self):
        """config/engine.yaml's `workers` block says what the model defaults to: a dead worker waits 1 s first."""
        assert load_settings(environ={}).engine.workers.restart_first_seconds == 1.0

    def test_a_first_restart_delay_from_engine_yaml_is_read(self, tmp_path):
        assert _with_engine(tmp_path, workers={"restart_first_seconds": 0.1}).engine.workers.restart_first_seconds == 0.1

    @pytest.mark.parametrize("workers", [{"restart_first_seconds": 0}, {"restart_first_seconds": -1}, {"restart_first_seconds": 31},
                                         {"restart_first_seconds": "0.5"}, {"restart_first_seconds": True}, {"restart_first_seconds": ".nan"},
                                         {"restart_first": 1}])
    def test_a_first_restart_delay_that_cannot_work_refuses_to_start(self, tmp_path, workers):
        """No wait (a crash loop as fast as the worker can start), a negative one, one past the 30 s the backoff stops at,
        a quoted number, a boolean or a misspelt key is refused at load, naming its place."""
        with pytest.raises(ConfigError, match=r"engine\.yaml:\d+:\d+: workers\."):
            _with_engine(tmp_path, workers=workers)
