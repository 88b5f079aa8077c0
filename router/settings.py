"""Load the engine's settings: config/engine.yaml, overridden by HELSEBRO_* variables.

Each setting is declared once, in a pydantic model with `extra="forbid"`, so a typo
in config/ is an error and never a silent default.
"""

from __future__ import annotations

import codecs
import os
import string
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator

from router.config_model import ConfigBase, config_message
from router.errors import ConfigError, MappingError
from router.mapping._yaml import load_yaml, plain, position_of
from router.routing.model import RoutesConfig, default_routes, load_routes

PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""The checkout: mappings/ and config/ are read from here unless a setting says otherwise."""


_Frozen = ConfigBase


def _text_codec(name: str | None) -> str | None:
    """Refuse a charset Python cannot decode text with.

    Why: it is read only when a message without MSH-18 arrives; a misspelt name
    loaded fine and then failed every such message with a LookupError.
    """
    if name is None:
        return None
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise ValueError(f"{name!r} is not a charset Python knows (a codec name such as utf-8, iso-8859-1 or cp1252)") from None
    if not getattr(info, "_is_text_encoding", True):
        raise ValueError(f"{name!r} is not a text charset (a codec name such as utf-8, iso-8859-1 or cp1252)")
    return name


_BrokerName = Annotated[str, Field(min_length=1, max_length=200)]
"""A name on the broker. Why not empty: RabbitMQ takes `""` as "make me a server-named queue" (or the
default exchange), so an empty inbound name consumed a queue nothing is ever published to."""

_System = Annotated[str, Field(min_length=1, pattern=r"^\S+$")]
"""A FHIR Identifier.system: a uri, so neither empty nor holding white space."""


class QueueNames(_Frozen):
    """Exchange and queue names on the broker."""

    exchange: _BrokerName = Field(default="helsebro.in", description="Direct exchange that senders publish inbound messages to.", examples=["helsebro.in"])
    inbound: _BrokerName = Field(default="helsebro.in.hl7v2", description="Queue the engine consumes inbound messages from.", examples=["helsebro.in.hl7v2"])
    routing_key: _BrokerName = Field(default="hl7v2", description="Routing key that binds the inbound queue to the exchange.")
    dead_letter: _BrokerName = Field(default="helsebro.dlq", description="Queue that holds messages that cannot succeed, with the reason in their headers.")
    replies: _BrokerName = Field(default="helsebro.reply.hl7v2", description="Queue that receives the HL7 ACK for every inbound message.")
    apprec_prefix: _BrokerName = Field(default="helsebro.reply.apprec", description="AppRecs go to one queue per receiving party: this prefix, a dot, and the original sender's HER-id (or `unknown`).", examples=["helsebro.reply.apprec"])
    destination_prefix: _BrokerName = Field(default="helsebro.dest", description="Queues of queued destinations (config/routes.yaml) are named this prefix, a dot, the destination's name, then `.p<k>` (work), `.retry.<i>` (retry ladder) or `.dlq`.", examples=["helsebro.dest"])


class BrokerConfig(_Frozen):
    """The `broker` block: how the engine talks to RabbitMQ or the embedded transport."""

    names: QueueNames = Field(default_factory=QueueNames, description="Exchange and queue names.")
    prefetch: int = Field(default=200, ge=1, le=1000, description="Deliveries held unacknowledged at once: at least batch_max (a smaller window caps every batch), twice it keeps the next batch arriving while one settles. All of them are delivered again if the worker dies (harmless: nothing is applied twice).")
    queue_type: Literal["quorum", "classic"] = Field(default="quorum", description="RabbitMQ queue type. Quorum queues are replicated and survive a node loss; the embedded transport ignores this.")
    reconnect_max_seconds: float = Field(default=30.0, gt=0, le=600, description="Longest wait, in seconds, between reconnect attempts after the broker is lost.")
    partitions: int = Field(default=1, ge=1, le=64, description="Partition queues the inbound stream is split into by a hash of the patient, each with one active consumer, so several workers keep per-patient order. 1 consumes the inbound queue directly (one active worker); more should be at least the number of workers. The embedded transport always uses 1. Changing it while messages wait moves patients between partitions: drain first.")
    publish_to_partition: bool = Field(default=True, description="With partitions > 1, Helsebro's own publishers (`helsebro send`, `helsebro dlq replay`) read the patient key from the bytes and publish straight to its partition (routing key `<routing_key>.p<k>`), one broker hop instead of two; messages published with the plain routing key still go through the intake. A patient lands in the same partition either way, so order holds, except between one patient's messages sent by both ways at once (router/routing/partition.py says when). Every publisher must use the engine's `partitions`. false: everything goes through the intake.")
    batch_max: int = Field(default=100, ge=1, le=1000, description="Most deliveries settled together: one record transaction, one wait for publisher confirms, one multiple ack. Only deliveries already received are batched, so a quiet queue still settles each message at once; more costs redelivery of the whole batch after a crash.")


class SenderConfig(_Frozen):
    """Per-sender overrides, keyed by MSH-3 (application) or MSH-4 (facility)."""

    charset: str | None = Field(default=None, description="Charset used when MSH-18 is empty, as a Python codec name.", examples=["iso-8859-1"])
    acknowledgments: Literal["msh", "original"] | None = Field(
        default=None, description="This sender's ACKs: `msh` as its MSH-15/16 ask (enhanced mode when either is set), `original` one application ACK "
        "(AA, AE, AR) whatever they say. Unset, the `hl7v2` block's.",
    )

    _charset_known = field_validator("charset")(_text_codec)


class Hl7v2Config(_Frozen):
    """The `hl7v2` block: decoding defaults."""

    default_charset: str = Field(default="utf-8", description="Charset used when MSH-18 is empty and the sender has no override. Bytes that are not valid in it fall back to ISO-8859-1, which never fails.", examples=["utf-8", "iso-8859-1"])
    senders: dict[str, SenderConfig] = Field(default_factory=dict, description="Overrides per sending application or facility (MSH-3 or MSH-4 namespace id).")
    acknowledgments: Literal["msh", "original"] = Field(
        default="original", description="How messages are acknowledged: `original` one application ACK (AA, AE or AR) for every message, whatever "
        "its MSH-15/16 say (many senders fill them in by habit and read only the application ACK: an error is never left unsaid); `msh` as "
        "each message's MSH-15 (accept ACK: CA or CR) and MSH-16 (application ACK: AA, AE or AR) ask, each AL, NE, ER or SU, and one "
        "application ACK when both are empty (HL7 original mode).",
    )

    _charset_known = field_validator("default_charset")(_text_codec)

    def original_acks(self, header: Any) -> bool:
        """True when *header*'s sender (MSH-3, else MSH-4, as for charsets) is answered in original mode whatever its MSH-15/16 say."""
        for name in (header.sending_application, header.sending_facility):
            sender = self.senders.get(name)
            if sender is not None and sender.acknowledgments is not None:
                return sender.acknowledgments == "original"
        return self.acknowledgments == "original"


class IdentifierConfig(_Frozen):
    """The `identifiers` block: FHIR systems for local identifiers, per assigning authority."""

    authorities: dict[str, _System] = Field(default_factory=dict, description="Assigning authority (CX-4.1, or MSH-4 when CX-4 is empty) to FHIR Identifier.system URI.", examples=[{"AHUS": "urn:oid:2.16.578.1.12.4.1.7.1"}])
    default_local_system: str = Field(default="urn:helsebro:local:{authority}:{type}", description="Template for a local identifier's system when its authority is not listed; {authority} and {type} are filled in from CX-4 (the sender, MSH-4, when CX-4 is empty) and CX-5.")

    @field_validator("default_local_system")
    @classmethod
    def _template_fills_in(cls, template: str) -> str:
        """Refuse a template that cannot be filled in, or that names no {authority}.

        Why: it is filled in per message; a misspelt field or a stray brace loaded fine
        and then failed every message with a local identifier, and a template without
        {authority} gives every hospital's patient numbers one system, so one hospital's
        patient 123456 would overwrite another's.
        """
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        except ValueError as exc:
            raise ValueError(f"not a template: {exc}") from None
        wrong = sorted(fields - {"authority", "type"})
        if wrong:
            raise ValueError(f"{{{wrong[0]}}} is not a field: only {{authority}} and {{type}} are filled in")
        if "authority" not in fields:
            raise ValueError("needs {authority}: without it every assigning authority's numbers share one system")
        try:
            template.format(authority="A", type="T")
        except (ValueError, IndexError, KeyError, AttributeError) as exc:
            raise ValueError(f"not a template: {exc}") from None
        return template


class MappingsConfig(_Frozen):
    """The `mappings` block: how the running engine follows mapping edits (and routes.yaml edits, at the same cadence)."""

    reload_seconds: float = Field(default=2.0, ge=0, le=3600, description="How often, in seconds, the engine looks for changed mapping files and a changed config/routes.yaml between deliveries. 0 turns hot reload off (of both); a small value costs one stat per mapping file per look.")


class WorkersConfig(_Frozen):
    """The `workers` block: how `helsebro run --workers N` starts again a worker that dies."""

    restart_first_seconds: float = Field(
        default=1.0, gt=0, le=30,
        description="Seconds `helsebro run --workers N` waits before it starts a worker that died unasked again; doubled for "
        "each further crash within 30 s of its start, up to 30 s (the fifth such crash in a row gives the run up). More than 0, "
        "at most 30.",
        examples=[1],
    )


class RecordConfig(_Frozen):
    """The `record` block: how the engine and the verbs use the shared record."""

    sqlite_busy_timeout: float = Field(
        default=10.0, gt=0, le=600,
        description="Seconds a SQLite record's writer waits for another's lock (another worker's transaction, a backup holding "
        "the file) before its apply is given up as the record being unavailable, logged `record_unavailable` and retried. "
        "PostgreSQL ignores it.",
    )


PLACEHOLDER_HER_ID = "8888888"
"""The HER-id Helsebro signs KITH messages with until `own.her_id` is set: not a real party."""

_HD_NAME = r"^[^|^~\\&\x00-\x1f]+$"
"""An HL7 HD namespace id as Helsebro writes it: no HL7 delimiter (| ^ ~ \\ &), no control character."""


class OwnConfig(_Frozen):
    """The `own` block: how Helsebro names itself in the messages it renders for queue destinations (format hl7v2 and kith)."""

    application: str = Field(
        default="HELSEBRO", min_length=1, max_length=20, pattern=_HD_NAME,
        description="MSH-3 (sending application) of every HL7 v2 message Helsebro renders, at most 20 characters (HD.1 is IS(20)). "
        "Inbound senders already address Helsebro by this name in their MSH-5; a receiver may route or answer on it.",
        examples=["HELSEBRO"],
    )
    facility: str | None = Field(
        default=None, min_length=1, max_length=20, pattern=_HD_NAME,
        description="MSH-4 (sending facility) of every HL7 v2 message Helsebro renders. Unset, MSH-4 is the source message's own "
        "sending facility (its MSH-4.1), so a receiver still tells the hospitals apart; set, every message names this facility "
        "and that distinction is lost.",
        examples=["HELSEBRO"],
    )
    organisation_name: str = Field(
        default="Helsebro integrasjonsmotor", min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$",
        description="The organisation name in MsgHead/MsgInfo/Sender of every KITH message Helsebro renders "
        "(read by an outbound mapping as `own.organisation_name`): the name NHN's Adresseregisteret has for the HER-id below.",
        examples=["Helse Midt-Norge IKT, integrasjon"],
    )
    her_id: str = Field(
        default=PLACEHOLDER_HER_ID, pattern=r"^[0-9]{1,9}$",
        description="The HER-id in MsgHead/MsgInfo/Sender of every KITH message Helsebro renders (`own.her_id` in an outbound "
        "mapping); receivers answer with AppRecs to it. The default, 8888888, is a placeholder that addresses nobody: "
        "set your organisation's HER-id from NHN's Adresseregisteret before a kith destination goes live.",
        examples=["8094"],
    )


class ServeConfig(_Frozen):
    """The `serve` block: the record's FHIR REST face (`helsebro serve`)."""

    max_connections: int = Field(
        default=64, ge=1, le=10_000,
        description="Connections `helsebro serve` serves at once, each on its own thread (an idle keep-alive connection keeps "
        "its thread up to 120 s). One more is answered 503 with Retry-After: 1, so a burst of connections cannot exhaust "
        "the process; each needs a record connection while it is answered, so keep it within the database's own limit.",
        examples=[64],
    )


class EngineConfig(_Frozen):
    """config/engine.yaml."""

    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="How the engine talks to RabbitMQ or the embedded transport.")
    mappings: MappingsConfig = Field(default_factory=MappingsConfig, description="How the running engine follows mapping edits.")
    hl7v2: Hl7v2Config = Field(default_factory=Hl7v2Config, description="HL7 v2 decoding defaults.")
    identifiers: IdentifierConfig = Field(default_factory=IdentifierConfig, description="FHIR systems for local identifiers.")
    record: RecordConfig = Field(default_factory=RecordConfig, description="How the shared record is used: the SQLite lock wait.")
    workers: WorkersConfig = Field(default_factory=WorkersConfig, description="How `helsebro run --workers N` restarts a worker that dies.")
    own: OwnConfig = Field(default_factory=OwnConfig, description="Helsebro's own names in the messages it renders: MSH-3/MSH-4, and the KITH MsgHead sender.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="The record's FHIR REST face, `helsebro serve`.")


class Settings(_Frozen):
    """Everything a command needs to know about its environment."""

    broker_url: str | None = Field(default=None, description="HELSEBRO_BROKER_URL: a RabbitMQ URL with its vhost (amqp://guest:guest@127.0.0.1:5672/%2F). Unset: the embedded transport under the data directory.")
    record_url: str | None = Field(default=None, description="HELSEBRO_RECORD_URL: postgresql://… for PostgreSQL. Unset: SQLite in the data directory.")
    data_dir: Path = Field(default=Path(".helsebro"), description="HELSEBRO_DATA_DIR: where the SQLite record, the embedded broker and the audit log live.")
    xsd_dir: Path | None = Field(default=None, description="HELSEBRO_XSD_DIR: the national schema folder (with ehelseCatalog.xml). Unset: XML validation is off.")
    mappings_dir: Path = Field(default=PROJECT_ROOT / "mappings", description="HELSEBRO_MAPPINGS_DIR: the mapping files.")
    config_dir: Path = Field(default=PROJECT_ROOT / "config", description="HELSEBRO_CONFIG_DIR: the folder holding engine.yaml.")
    phi_key: SecretStr | None = Field(default=None, description="HELSEBRO_PHI_KEY: a secret that keys the hashes patients are logged, dead-lettered and journalled under (HMAC), so a key cannot be traced to its number by trying every number. Every worker and `helsebro find` must share it; changing it changes every key. Unset: a plain hash.")
    engine: EngineConfig = Field(default_factory=EngineConfig)
    routes: RoutesConfig = Field(default_factory=default_routes, description="config/routes.yaml: destinations and the routes to them; absent, everything goes to the record.")

    @property
    def phi_key_bytes(self) -> bytes | None:
        """HELSEBRO_PHI_KEY as the HMAC key router.logging.phi_hash takes, or None."""
        return self.phi_key.get_secret_value().encode("utf-8") if self.phi_key else None

    @property
    def sqlite_path(self) -> Path:
        """The SQLite record file used when no record URL is set."""
        return self.data_dir / "record.sqlite3"

    @property
    def sqlite_busy_timeout(self) -> float:
        """engine.yaml's record.sqlite_busy_timeout: seconds a SQLite record's writer waits for another's lock."""
        return self.engine.record.sqlite_busy_timeout


_ENV = {
    "broker_url": "HELSEBRO_BROKER_URL",
    "record_url": "HELSEBRO_RECORD_URL",
    "data_dir": "HELSEBRO_DATA_DIR",
    "xsd_dir": "HELSEBRO_XSD_DIR",
    "mappings_dir": "HELSEBRO_MAPPINGS_DIR",
    "config_dir": "HELSEBRO_CONFIG_DIR",
    "phi_key": "HELSEBRO_PHI_KEY",
}


def _load_engine(path: Path) -> EngineConfig:
    """Read engine.yaml, naming file:line:col for what does not fit the model.

    Raises:
        ConfigError: a YAML syntax error, or a key or value the model refuses.
    """
    if not path.exists():
        return EngineConfig()
    try:
        node = load_yaml(path)
    except MappingError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        return EngineConfig.model_validate(plain(node) or {})
    except ValidationError as exc:
        errors = exc.errors()
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a typo explains the rest
        file, line, column = position_of(node, list(first["loc"]), value=first["type"] != "extra_forbidden")  # a wrong value at the value
        where = ".".join(str(p) for p in first["loc"])
        file = str(path) if file == "?" else file  # a file of one scalar holds no position: name it all the same
        if not where:  # the whole file: pydantic's words would name an empty key and a class
            raise ConfigError(f"{file}:{line}:{column}: the file must be a mapping of blocks (broker:, hl7v2:, …), not a list or a value") from exc
        if first["type"] == "extra_forbidden" and len(first["loc"]) == 1 and first["loc"][0] in _ENV:
            # broker_url: in engine.yaml was "Extra inputs are not permitted": say where connection settings live
            raise ConfigError(f"{file}:{line}:{column}: {where}: not an engine.yaml setting: set {_ENV[where]} in the environment") from exc
        raise ConfigError(f"{file}:{line}:{column}: {where}: {config_message(first)}") from exc


_BROKER_SCHEMES = ("amqp", "amqps")
_RECORD_SCHEMES = ("postgresql://", "postgres://", "sqlite:///")
"""What adapters/fhir/record.py's open_record takes; checked here too so every verb refuses another at start."""


def _check_urls(values: dict[str, object]) -> None:
    """Refuse a broker or record URL no connection can be made with, naming the variable but never the URL.

    Why: a broker URL without amqp:// (`rabbit:5672`) was taken as a host name, so `helsebro run`
    retried it as an outage for ever; a port out of range ended it with a traceback. The URL
    itself is left out of the message: it carries the password.
    """
    broker = values.get("broker_url")
    if isinstance(broker, str):
        parts = urlsplit(broker)
        if parts.scheme not in _BROKER_SCHEMES:
            raise ConfigError("HELSEBRO_BROKER_URL: not a RabbitMQ URL: it must start with amqp:// or amqps://, e.g. amqp://guest:guest@127.0.0.1:5672/%2F")
        try:
            parts.port  # noqa: B018 - parsing the port is the check: urlsplit reads it only when asked
        except ValueError:
            raise ConfigError("HELSEBRO_BROKER_URL: the port is not a number from 0 to 65535") from None
    record = values.get("record_url")
    if isinstance(record, str) and not record.startswith(_RECORD_SCHEMES):
        raise ConfigError("HELSEBRO_RECORD_URL: must start with postgresql:// (PostgreSQL) or sqlite:/// (a SQLite file)")


def load_settings(environ: dict[str, str] | None = None, **overrides: object) -> Settings:
    """Read config/engine.yaml, then apply HELSEBRO_* variables, then *overrides*.

    Raises:
        ConfigError: engine.yaml is unreadable or does not match its model, or
            routes.yaml is wrong (a MappingError with file:line:col).
    """
    env = os.environ if environ is None else environ
    # Blank counts as unset, and spaces around a URL or a folder (`export X=" amqp://…"`, a line read
    # from a file) are not part of it: kept, they failed later as "cannot reach the broker at :".
    # The PHI key is taken as written: trimming it would change every patient key made with it.
    values: dict[str, object] = {k: env[v] if k == "phi_key" else env[v].strip() for k, v in _ENV.items() if env.get(v, "").strip()}
    values.update({k: v for k, v in overrides.items() if v is not None})
    _check_urls(values)
    for key in ("config_dir", "mappings_dir", "xsd_dir"):  # a misspelt folder ran on the defaults without a word
        if key in values and not Path(str(values[key])).is_dir():
            raise ConfigError(f"{_ENV[key]} {values[key]}: no such folder")
    config_dir = Path(str(values.get("config_dir", PROJECT_ROOT / "config")))
    engine_file = config_dir / "engine.yaml"
    try:
        engine = values["engine"] = _load_engine(engine_file)
        values["routes"] = read_routes(config_dir, Path(str(values.get("mappings_dir", PROJECT_ROOT / "mappings"))), engine)
        return Settings.model_validate(values)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{engine_file}: cannot read: {exc}") from exc
    except ValidationError as exc:  # engine.yaml named its own place above: this is a HELSEBRO_* value
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"settings: {where}: {first['msg']}") from exc


def read_routes(config_dir: Path, mappings_dir: Path, engine: EngineConfig) -> RoutesConfig:
    """Read *config_dir*/routes.yaml with every check of a start (the engine's own queue names refused); absent, the default route.

    One function for the start and the running engine's reload (router/engine.py), so a reload
    refuses exactly what a start refuses.

    Raises:
        MappingError: a YAML, model or condition error, at file:line:col.
        OSError: the file cannot be read.
    """
    routes_file = config_dir / "routes.yaml"
    if not routes_file.exists():
        return default_routes()
    names = engine.broker.names
    return load_routes(
        routes_file, mappings_dir=mappings_dir,
        own_queues=(names.inbound, names.dead_letter, names.replies), own_prefixes=(names.inbound, names.apprec_prefix, names.destination_prefix),
    )
