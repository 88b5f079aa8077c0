"""The model of config/routes.yaml: destinations, the routes to them, the duplicate window; loaded with file:line:col.

Matching a message against the routes is match.py's; delivering to a
destination is router/delivery/'s. A missing routes.yaml means one default
route, everything to the record, so an engine without one behaves as before.

    destinations:
      record: {kind: record}
      kommune: {kind: queue, queue: kommune.adt.in, format: passthrough}
      lab-fhir: {kind: fhir, server: {base_url: "https://lab.example.no/fhir"}, on_failure: park}
    routes:
      - name: admissions
        match: {format: hl7v2, message_code: [ADT], event: [A01, A03], when: "PV1-2 = I"}
        to: [record, kommune, lab-fhir]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from adapters.fhir.client import FhirClientConfig
from router.config_model import ConfigBase, config_message
from router.errors import MappingError
from router.mapping._yaml import load_yaml, plain, position_of

__all__ = [
    "Destination",
    "DuplicatesConfig",
    "FhirDestination",
    "OnFailure",
    "QueueDestination",
    "RecordDestination",
    "RetryConfig",
    "Route",
    "RouteMatch",
    "RoutesConfig",
    "default_routes",
    "load_routes",
]

OnFailure = Literal["strict", "park"]
"""What a queued destination does with a message that fails for now: retry in place, holding back its
partition (strict, order kept), or park it on the retry ladder and go on (park, order given up for it)."""

_NAME = r"^[a-z0-9][a-z0-9-]{0,39}$"
_HD_NAME = r"^[^|^~\\&\x00-\x1f]+$"  # an HL7 namespace id: no delimiter, no control character (as router/settings.py's)

_Frozen = ConfigBase


class RetryConfig(_Frozen):
    """The retry ladder of a queued destination: TTL queues that dead-letter back to the work queue."""

    # Each step is a retry queue's x-message-ttl (ms, with the jitter added): a negative, NaN or endless
    # one loaded fine and failed at declare or publish; 0 retried at once, burning every attempt in a burst.
    delays_seconds: tuple[Annotated[float, Field(gt=0, le=7 * 86400, allow_inf_nan=False)], ...] = Field(
        default=(1.0, 5.0, 30.0, 300.0, 1800.0), min_length=1, max_length=10,
        description="Wait before each retry, in seconds (more than 0, at most 7 days), one retry queue per step; the last step repeats. "
        "Short first steps ride out a restart, long last ones an outage of hours.",
        examples=[[1, 5, 30, 300, 1800]],
    )
    jitter: float = Field(
        default=0.2, ge=0, le=1,
        description="Fraction of a step's delay drawn at random and added per message, so parked messages "
        "do not all come back at once. 0 makes retries land together.",
    )
    max_attempts: int = Field(
        default=50, ge=1, le=10_000,
        description="Attempts, the first included, before a message that keeps failing for now goes to the "
        "destination's dead-letter queue. With the default ladder 50 attempts span about a day.",
    )


class RecordDestination(_Frozen):
    """The shared record the engine itself holds (HELSEBRO_RECORD_URL): applied inline, in order, waiting out outages."""

    kind: Literal["record"]


class QueueDestination(_Frozen):
    """A legacy system's RabbitMQ queue, fed in its own format; the broker's confirm is the delivery."""

    kind: Literal["queue"]
    queue: str = Field(min_length=1, max_length=200, description="Durable queue the messages are published to; declared on start.", examples=["kommune.pleie.adt"])
    format: Literal["passthrough", "fhir-json", "hl7v2", "kith"] = Field(
        default="passthrough",
        description="passthrough: the original bytes; fhir-json: the canonical transaction Bundle as JSON; "
        "hl7v2: an HL7 v2 message rendered from the Bundle by an outbound mapping (mappings/outbound/hl7v2/); "
        "kith: a Norwegian XML message in a MsgHead rendered by an outbound mapping (mappings/outbound/kith/).",
    )
    mapping: str | None = Field(
        default=None, min_length=1, max_length=100,
        description="The outbound mapping to render with (hl7v2 and kith), by the name in its file. "
        "Unset, an hl7v2 destination picks the outbound mapping for the message's own structure.",
        examples=["ADT_A01", "PLO_InnlagtPasient"],
    )
    version: str | None = Field(
        default=None, pattern=r"^2\.[3-9](\.[0-9])?$",
        description="hl7v2: the HL7 version the receiver reads (MSH-12), e.g. 2.3 or 2.5.1; unset, 2.5.1.",
        examples=["2.3", "2.5.1"],
    )
    charset: str | None = Field(
        default=None,
        description="hl7v2: the receiver's character set, written in MSH-18 and used to encode: ASCII, 8859/1 or UNICODE UTF-8; unset, UNICODE UTF-8.",
        examples=["8859/1"],
    )
    receiving_application: str | None = Field(
        default=None, min_length=1, max_length=20, pattern=_HD_NAME,
        description="hl7v2: MSH-5, the receiving application, at most 20 characters without | ^ ~ \\ &; unset, the destination's name.",
        examples=["DIPS"],
    )
    receiving_facility: str | None = Field(
        default=None, min_length=1, max_length=20, pattern=_HD_NAME,
        description="hl7v2: MSH-6, the receiving facility, at most 20 characters without | ^ ~ \\ &; unset, MSH-6 is left empty.",
        examples=["STOLAV"],
    )
    receiver_her_id: str | None = Field(
        default=None, pattern=r"^[0-9]{1,9}$",
        description="kith: the receiving organisation's HER-id, written in MsgHead/Receiver.",
        examples=["12345"],
    )
    receiver_name: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$",
        description="kith: the receiving organisation's name as NHN's Adresseregisteret has it for receiver_her_id, "
        "read by an outbound mapping as `destination.receiver_name`; unset, the destination's name.",
        examples=["Trondheim kommune, helse og velferd"],
    )

    @field_validator("charset")
    @classmethod
    def _charset_known(cls, charset: str | None) -> str | None:
        """Refuse a charset the hl7v2 renderer cannot write: it was refused only when `helsebro run` began to deliver."""
        from adapters.hl7v2._er7 import CHARSETS

        if charset is not None and charset not in CHARSETS:
            raise ValueError(f"{charset!r} is not a charset an hl7v2 destination may name (MSH-18, HL7 table 0211): {_or(tuple(CHARSETS))}")
        return charset

    @field_validator("version")
    @classmethod
    def _version_known(cls, version: str | None) -> str | None:
        """Refuse a version that fits the pattern but has no definitions (2.7.1, 2.9): it was refused only at delivery's start."""
        if version is not None:
            from adapters.hl7v2._versions import version_defs

            try:
                version_defs(version)
            except LookupError as exc:
                raise ValueError(str(exc)) from None
        return version

    @model_validator(mode="after")
    def _options_fit_format(self) -> QueueDestination:
        given = [n for n in ("mapping", *_HL7V2_OPTIONS, *_KITH_OPTIONS) if getattr(self, n) is not None]
        if self.format not in ("hl7v2", "kith") and given:
            raise ValueError(f"{given[0]}: mapping and the rendering options apply to the hl7v2 and kith formats only")
        for fmt, options in (("hl7v2", _HL7V2_OPTIONS), ("kith", _KITH_OPTIONS)):
            wrong = [n for n in options if getattr(self, n) is not None]
            if self.format != fmt and wrong:
                raise ValueError(f"{wrong[0]}: {_and(options)} apply to the {fmt} format only")
        if self.format == "kith" and self.mapping is None:
            raise ValueError("a kith destination needs `mapping`: the outbound mapping that builds its message")
        return self


_HL7V2_OPTIONS = ("version", "charset", "receiving_application", "receiving_facility")
"""QueueDestination fields only an hl7v2 destination reads."""

_KITH_OPTIONS = ("receiver_her_id", "receiver_name")
"""QueueDestination fields only a kith destination reads."""


def _and(names: tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1]


def _or(names: tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1]


class FhirDestination(_Frozen):
    """An external FHIR R4 server, fed through its own partitioned work queue, retry ladder and dead-letter queue."""

    kind: Literal["fhir"]
    server: FhirClientConfig = Field(description="The server: base URL, authentication, timeouts.")
    on_failure: OnFailure = Field(default="strict", description="strict: retry a failing message in place, holding back its partition, so order holds; park: put it on the retry ladder and go on.")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="The retry ladder for parked messages.")


Destination = Annotated[RecordDestination | QueueDestination | FhirDestination, Field(discriminator="kind")]
"""One destination block, told apart by `kind`."""


class RouteMatch(_Frozen):
    """What a message must be for a route to take it; every field given must match, an absent one matches all."""

    format: Literal["hl7v2", "kith"] | None = Field(default=None, description="Source format. Required with `when`, whose paths are that format's (terser paths or XPath).")
    message_code: tuple[str, ...] = Field(default=(), description="HL7 MSH-9.1 (ADT, ORU) or the KITH message type.", examples=[["ADT"]])
    event: tuple[str, ...] = Field(default=(), description="HL7 MSH-9.2 trigger events.", examples=[["A01", "A03"]])
    sender: tuple[str, ...] = Field(default=(), description="Sending application, facility or `application@facility` (MSH-3/MSH-4), or the sender's HER-id.", examples=[["PAS@STOLAV", "STOLAV", "8094"]])
    receiver: tuple[str, ...] = Field(default=(), description="Receiving application, facility or `application@facility` (MSH-5/MSH-6), or the receiver's HER-id.", examples=[["HELSEPLATTFORMEN"]])
    when: str | None = Field(default=None, description="A condition in the mappings' expression language over the message itself. "
                                  "An HL7 path is checked as mapping lint checks one: it must fit a message structure of `message_code`.", examples=["PV1-2 = I"])

    @field_validator("message_code", "event", "sender", "receiver", mode="before")
    @classmethod
    def _not_empty(cls, values: Any) -> Any:
        """Refuse an empty list: it matched every message, as an absent key does, which no author writing one means."""
        if isinstance(values, list | tuple) and not values:
            raise ValueError("an empty list would match every message: leave the key out to match all, or list what to match")
        return values

    @field_validator("message_code", "event")
    @classmethod
    def _can_match(cls, values: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        """Refuse a code or event no message of the route's format can carry.

        Why: a route that can never match settles everything it was meant for as
        `filtered`, answered AA and sent nowhere. A KITH message has no trigger event;
        an HL7 v2 message code (MSH-9.1) and event (MSH-9.2) are three letters or digits,
        so `ADT^A01` or the structure `ADT_A01` is never one.
        """
        fmt = info.data.get("format")
        if fmt == "kith" and info.field_name == "event" and values:
            raise ValueError("KITH messages carry no trigger event: a route with `format: kith` and `event` can never match (match on `message_code`)")
        if fmt == "hl7v2":
            wrong = [v for v in values if not re.fullmatch(r"[A-Za-z0-9]{3}", v)]
            if wrong:
                name = info.field_name or "event"  # always set for a field validator
                field = "MSH-9.1" if name == "message_code" else "MSH-9.2"
                raise ValueError(f"{wrong[0]!r} can never match: an HL7 v2 {name.replace('_', ' ')} ({field}) is three letters or digits, such as ADT or A01")
        return values

    @model_validator(mode="after")
    def _when_needs_format(self) -> RouteMatch:
        if self.when is not None and self.format is None:
            raise ValueError("`when` needs `format` (hl7v2 or kith): its paths are that format's")
        return self


class Route(_Frozen):
    """One route: the messages it matches and the destinations they go to."""

    name: str = Field(pattern=_NAME, description="Names the route in logs and in the `filtered` outcome.", examples=["admissions"])
    match: RouteMatch = Field(default_factory=RouteMatch, description="What the route takes; empty takes everything.")
    to: tuple[str, ...] = Field(min_length=1, description="Destination names, as declared under `destinations`.", examples=[["record", "kommune"]])
    on_failure: OnFailure | None = Field(default=None, description="Overrides the `on_failure` of its destinations of kind fhir for messages this route sends; a route with none of them is refused.")


class DuplicatesConfig(_Frozen):
    """How long a message id (MSH-10 with its sender; a KITH MsgId) is remembered so a resent copy is not applied twice."""

    window_seconds: int = Field(
        default=7 * 86400, ge=0, le=366 * 86400,
        description="Seconds a (sender, MSH-10) pair is remembered. 0 turns detection off: a resent copy is then "
        "forwarded and answered again, but the record and external FHIR servers still take each message's bytes once "
        "(the applied-message ledger). Longer costs one small row per message for longer.",
    )
    kith_window_days: int = Field(
        default=30, ge=0, le=3650,
        description="Days a KITH MsgId (with each recipient) is remembered: a resent copy inside it gets no second "
        "AppRec and is not applied again. Senders treat a missing AppRec as an error after 4 days (HIS 80415:2012 §3.2), "
        "so resends come well inside 30 days. 0 turns it off: a copy is answered again (the applied-message ledger "
        "still applies its bytes once).",
    )


class _Placed(ValueError):
    """A check across the file that knows which key is wrong: load_routes points at that key's line, not the file's first.

    Why: a model-level validator's error carries no `loc`, so without this an undeclared
    destination or a duplicate route name would be reported at line 1.
    """

    def __init__(self, message: str, loc: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.loc = loc


class RoutesConfig(_Frozen):
    """config/routes.yaml."""

    destinations: dict[str, Destination] = Field(description="Destinations by name (lower case, digits, dashes; part of queue names).")
    routes: tuple[Route, ...] = Field(min_length=1, description="Routes; every route that matches adds its destinations.")
    duplicates: DuplicatesConfig = Field(default_factory=DuplicatesConfig, description="Duplicate detection for HL7 v2 (window_seconds) and KITH (kith_window_days).")

    @model_validator(mode="after")
    def _known_names(self) -> RoutesConfig:
        for name in self.destinations:
            if not re.fullmatch(_NAME, name):  # fullmatch: `$` alone lets a trailing newline through
                raise _Placed(f"destination name {name!r} must be lower case letters, digits and dashes", ("destinations", name))
        seen: dict[str, int] = {}
        for i, route in enumerate(self.routes):
            if route.name in seen:  # one name, two routes: logs and the `filtered` outcome could not tell them apart
                raise _Placed(f"route name {route.name!r} is used already by route {seen[route.name] + 1}", ("routes", i, "name"))
            seen[route.name] = i
            unknown = [j for j, d in enumerate(route.to) if d not in self.destinations]
            if unknown:
                raise _Placed(f"route {route.name!r} sends to undeclared destination {route.to[unknown[0]]!r}", ("routes", i, "to", unknown[0]))
            if route.on_failure is not None and not any(isinstance(self.destinations[d], FhirDestination) for d in route.to):
                # Only a destination fed through its own work queue (kind fhir) retries: set here, it was ignored without a word.
                raise _Placed(f"route {route.name!r}: on_failure applies to destinations of kind fhir (retried from their own work queues), "
                              "and it sends to none: leave on_failure out", ("routes", i, "on_failure"))
        self._distinct_queues()
        return self

    def _distinct_queues(self) -> None:
        """Two queue destinations on one queue would each publish every message there: the receiver gets it twice."""
        owner: dict[str, str] = {}
        for name, dest in self.destinations.items():
            if isinstance(dest, QueueDestination):
                if dest.queue in owner:
                    raise _Placed(f"destination {owner[dest.queue]!r} publishes to queue {dest.queue!r} already", ("destinations", name, "queue"))
                owner[dest.queue] = name

    def rendered_kith(self) -> tuple[str, ...]:
        """Names of the queue destinations Helsebro renders KITH for (`format: kith` with a mapping): their receivers answer with AppRecs."""
        return tuple(n for n, d in self.destinations.items() if isinstance(d, QueueDestination) and d.format == "kith" and d.mapping)

    def queued(self) -> tuple[str, ...]:
        """Names of the destinations fed through their own work queues (kind fhir), sorted."""
        return tuple(sorted(n for n, d in self.destinations.items() if isinstance(d, FhirDestination)))


def default_routes() -> RoutesConfig:
    """Everything goes to the record: the behaviour without a routes.yaml."""
    return RoutesConfig(destinations={"record": RecordDestination(kind="record")}, routes=(Route(name="default", to=("record",)),))


def load_routes(path: Path, *, mappings_dir: Path | None = None, own_queues: tuple[str, ...] = (), own_prefixes: tuple[str, ...] = ()) -> RoutesConfig:
    """Read and check *path*, compiling every `when:` (XPath prefixes from *mappings_dir*/kith/namespaces.yaml).

    *own_queues* are the engine's own queue names (inbound, dead letters, replies) and *own_prefixes*
    the prefixes of its own queue families (`<prefix>.…`): a queue destination may use none of them.

    Raises:
        MappingError: a YAML, model or condition error, or a queue of the engine's own, at file:line:col.
    """
    node = load_yaml(path)
    try:
        config = RoutesConfig.model_validate(plain(node) or {})
    except ValidationError as exc:
        errors = exc.errors()
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a typo explains the rest
        placed = (first.get("ctx") or {}).get("error")
        loc = [*first["loc"], *placed.loc] if isinstance(placed, _Placed) else _untagged(list(first["loc"]))
        raise _error(path, node, loc, f"{'.'.join(str(p) for p in loc)}: {config_message(first)}", value=first["type"] != "extra_forbidden") from exc
    _own_queues_refused(config, path, node, own_queues, own_prefixes)
    if mappings_dir is not None:
        _outbound_mappings_found(config, path, node, mappings_dir)
    from router.routing.match import compile_when  # the path compilers load only when a route has a condition

    for i, route in enumerate(config.routes):
        if route.match.when is not None:
            try:
                compile_when(route.match.when, route.match.format or "hl7v2", mappings_dir=mappings_dir, message_codes=route.match.message_code)
            except ValueError as exc:  # ConditionSyntaxError and the path compilers' syntax errors
                raise _error(path, node, ["routes", i, "match", "when"], f"route {route.name}: when: {exc}") from exc
    return config


_KINDS = frozenset(get_args(c.model_fields["kind"].annotation)[0] for c in (RecordDestination, QueueDestination, FhirDestination))
"""The `kind` tags pydantic puts in a destination's error loc."""


def _untagged(loc: list[Any]) -> list[Any]:
    """*loc* without the `kind` tag pydantic adds after a destination's name (`destinations.lab.queue.charset`).

    Why: the tag `queue` is also a key of a queue destination, so the position followed it and
    named the `queue:` value's column, and the message a key the author never wrote.
    """
    if len(loc) >= 3 and loc[0] == "destinations" and loc[2] in _KINDS:
        return [*loc[:2], *loc[3:]]
    return loc


def _error(path: Path, node: object, loc: list[Any], reason: str, *, value: bool = True) -> MappingError:
    """A MappingError at *loc*'s line (at its value when that is a scalar, unless *value* is False: a key refused as such);
    an empty file (no node to hold a position) is named by its path, at line 1."""
    file, line, column = position_of(node, loc, value=value)
    return MappingError(reason, file=str(path) if file == "?" else file, line=line, column=column)


def _own_queues_refused(config: RoutesConfig, path: Path, node: object, own: tuple[str, ...], prefixes: tuple[str, ...]) -> None:
    """Refuse a queue destination that publishes to one of the engine's own queues.

    Why: a destination on the inbound queue feeds every message back in (a loop without
    end); one on the dead-letter, reply or a destination's work queue mixes its messages
    into another's. `amq.` names are the broker's own and cannot be declared.
    """
    for name, dest in config.destinations.items():
        if not isinstance(dest, QueueDestination):
            continue
        taken = dest.queue in own or dest.queue.startswith(("amq.", *(f"{p}." for p in prefixes)))
        if taken:
            raise _error(path, node, ["destinations", name, "queue"],
                         f"destinations.{name}.queue: {dest.queue!r} is a queue of Helsebro's own or the broker's (config/engine.yaml broker.names); choose another")


def _outbound_mappings_found(config: RoutesConfig, path: Path, node: object, mappings_dir: Path) -> None:
    """Refuse a queue destination whose outbound mapping file does not exist under *mappings_dir*/outbound/<format>/.

    Why: the renderer looks for it only when `helsebro run` starts delivering, and then named the
    destination, not routes.yaml's line; `helsebro status` and `mappings lint` said nothing at all.
    """
    for name, dest in config.destinations.items():
        if not isinstance(dest, QueueDestination) or dest.format not in ("hl7v2", "kith"):
            continue
        root = mappings_dir / "outbound" / dest.format
        if dest.mapping is None:  # an hl7v2 destination picks by structure: it needs at least one
            if not any(root.glob("*.yaml")):
                raise _error(path, node, ["destinations", name, "format"],
                             f"destinations.{name}.format: no outbound {dest.format} mappings in {root} to render with")
            continue
        if not (root / f"{dest.mapping}.yaml").is_file():
            raise _error(path, node, ["destinations", name, "mapping"],
                         f"destinations.{name}.mapping: no outbound {dest.format} mapping {dest.mapping!r} "
                         f"({root / dest.mapping}.yaml does not exist)")
