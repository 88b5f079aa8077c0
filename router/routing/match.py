"""Decide where a converted message goes: compile routes.yaml once, then match each message in microseconds.

Every route that matches adds its destinations, in the order the routes are
written; a message no route takes is `filtered`. A `when:` condition is the
mappings' expression language over the message itself, compiled with the
source format's path compiler (terser paths for HL7 v2, checked against the
standard's structures as mapping lint checks them; XPath with the prefixes of
mappings/kith/namespaces.yaml for KITH). An HL7 message is
tokenized again only when a route with a `when:` looks at it. Delivering is
router/delivery/'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.errors import ConfigError, MessageError
from router.mapping.conditions import ConditionSyntaxError, compile_condition
from router.routing.model import OnFailure, QueueDestination, Route, RoutesConfig

if TYPE_CHECKING:
    from router.contracts import Converted

__all__ = ["Decision", "Router", "compile_when"]


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one message goes: the matching routes' names, the destinations, per-destination on_failure overrides."""

    routes: tuple[str, ...]
    destinations: tuple[str, ...]
    on_failure: tuple[tuple[str, OnFailure], ...] = ()

    @property
    def filtered(self) -> bool:
        """True when no route took the message."""
        return not self.destinations


def compile_when(text: str, fmt: str, *, mappings_dir: Path | None, message_codes: tuple[str, ...] = ()) -> Callable[[Any], bool]:
    """Compile a route's `when:` for *fmt* (hl7v2 or kith); an HL7 route's paths are checked for the *message_codes* it names.

    Raises:
        ConditionSyntaxError: the text does not follow the grammar, or a path is wrong.
    """
    if fmt == "hl7v2":
        return compile_condition(text, _hl7_paths(message_codes))
    from adapters.kith.paths import path_compiler

    prefixes = _prefixes(mappings_dir)
    when = compile_condition(text, path_compiler(prefixes))
    _try_xpaths(when, prefixes)
    return when


def _hl7_paths(message_codes: tuple[str, ...]) -> Callable[[str], Any]:
    """The terser path compiler with the mapping compiler's checks (router/mapping/compiler.py, `_checked_path`).

    Why: `when: PID-99 valued`, a misspelt segment, or an OBR on a route for ADT loaded
    silently, and the route never matched: every message it was meant for was `filtered`,
    answered AA and sent nowhere. Each path must exist in HL7 v2.5 to v2.8 (`check_path`;
    Z-segments are the site's, any field), and fit at least one message structure of the
    codes the route names (`unreached`, the rule for a template several structures use): a
    route for ADT and ORU may read OBR, which only its ORU messages carry. The event does
    not narrow the structures: a sender's MSH-9.3 and mappings/hl7v2/structures.yaml decide
    those, and neither is the route's. A route naming no code, or one HL7 defines no structure
    for, can see any structure: its paths are not held to one, as a template no message uses
    is not, and a structure hl7apy does not know is not.
    """
    from adapters.hl7v2.paths import compile_path
    from adapters.hl7v2.structure import check_path, structures_of, unreached

    per_code = [structures_of(code) for code in message_codes]
    # A code HL7 defines no structure for (a site's own message type) may carry anything, as an unknown structure may in lint.
    structures = () if not all(per_code) else tuple(sorted({s for found in per_code for s in found}))
    codes = " or ".join(sorted({c.upper() for c in message_codes}))

    def checked(text: str) -> Any:
        path = compile_path(text)
        problem = check_path(path)
        if problem:
            raise ValueError(problem)
        what = unreached(path, structures)
        if what:
            raise ValueError(f"no {codes} message structure has the {what} (HL7 v2.5 to v2.8), so this route never matches")
        return path

    return checked


def _try_xpaths(when: Callable[[Any], bool], prefixes: dict[str, tuple[str, ...]]) -> None:
    """Evaluate each XPath of *when* once, on an empty document, so a path the XPath engine can never run is refused now.

    Why: lxml compiles `$name` (an unbound variable) and `foo()` (an unknown function)
    and fails only when it evaluates them; unchecked, every KITH message the route
    looked at would break settling and be dead-lettered as `internal`, unanswered.

    Raises:
        ConditionSyntaxError: a path that fails on any document.
    """
    from lxml import etree

    from adapters.kith.paths import XmlScope
    from router.mapping.conditions import paths_of

    root = etree.Element("probe")
    binding = tuple((prefix, uris[0]) for prefix, uris in prefixes.items() if uris)
    for path in paths_of(when):
        try:
            path.resolve(XmlScope(root, root, binding, set()))
        except MessageError as exc:
            raise ConditionSyntaxError(f"{exc.reason}: an unbound $variable or an unknown function?") from exc


def _prefixes(mappings_dir: Path | None) -> dict[str, tuple[str, ...]]:
    from router.mapping.mapping_set import load_namespaces

    ns_file = (mappings_dir / "kith" / "namespaces.yaml") if mappings_dir else None
    return load_namespaces(ns_file) if ns_file is not None and ns_file.exists() else {}


class _Compiled:
    __slots__ = ("codes", "events", "receivers", "route", "senders", "when")

    def __init__(self, route: Route, when: Callable[[Any], bool] | None) -> None:
        m = route.match
        self.route = route
        self.when = when
        self.codes = frozenset(c.upper() for c in m.message_code)  # upper case: see _code
        self.events = frozenset(e.upper() for e in m.event)
        self.senders = frozenset(m.sender)
        self.receivers = frozenset(m.receiver)


class Router:
    """The compiled routes; `decide` is called once per converted message."""

    def __init__(self, config: RoutesConfig, *, mappings_dir: Path | None = None, hl7_charset: str = "utf-8", sender_charsets: dict[str, str] | None = None) -> None:
        """Compile every route.

        Raises:
            ConfigError: a `when:` condition does not compile.
        """
        self._config = config
        self._charset = hl7_charset
        self._sender_charsets = sender_charsets or {}
        self._mappings_dir = mappings_dir
        self._xml_prefixes: dict[str, tuple[str, ...]] | None = None
        compiled = []
        for route in config.routes:
            when = None
            if route.match.when is not None:
                try:
                    when = compile_when(route.match.when, route.match.format or "hl7v2", mappings_dir=mappings_dir, message_codes=route.match.message_code)
                except (ConditionSyntaxError, ValueError) as exc:
                    raise ConfigError(f"routes.yaml: route {route.name}: when: {exc}") from exc
            compiled.append(_Compiled(route, when))
        self._routes = tuple(compiled)
        self._trivial = len(compiled) == 1 and not _restricts(compiled[0])

    def decide(self, conv: Converted) -> Decision:
        """Return where *conv* goes. A `when:` that cannot read the message does not match."""
        if self._trivial:
            only = self._routes[0].route
            return Decision((only.name,), only.to, tuple((d, only.on_failure) for d in only.to) if only.on_failure else ())
        names: list[str] = []
        dests: list[str] = []
        overrides: list[tuple[str, OnFailure]] = []
        scope: list[Any] = []  # built once, on the first `when:`
        for c in self._routes:
            if not self._matches(c, conv, scope):
                continue
            names.append(c.route.name)
            for d in c.route.to:
                if d not in dests:
                    dests.append(d)
                    if c.route.on_failure is not None:
                        overrides.append((d, c.route.on_failure))
        return Decision(tuple(names), tuple(dests), tuple(overrides))

    def decide_unmapped(self, conv: Converted) -> Decision | None:
        """Where a message no mapping serves (NoMapping) goes: the matching routes' decision when every destination in it
        takes the original bytes (a `passthrough` queue), else None (it needs a Bundle somewhere, or no route took it).

        Such a message has no Bundle and no patient; its header (type, event, sender,
        receiver) and its own content (`when:`) are matched as any message's are.
        """
        decision = self.decide(conv)
        dests = self._config.destinations
        if decision.filtered or not all(isinstance(d := dests.get(name), QueueDestination) and d.format == "passthrough" for name in decision.destinations):
            return None
        return decision

    def _matches(self, c: _Compiled, conv: Converted, scope: list[Any]) -> bool:
        m = c.route.match
        if m.format is not None and conv.format != m.format:
            return False
        header = conv.header
        if c.codes and _code(conv) not in c.codes:
            return False
        if c.events and (header is None or header.trigger_event.upper() not in c.events):
            return False
        if c.senders and c.senders.isdisjoint(_parties(conv, sender=True)):
            return False
        if c.receivers and c.receivers.isdisjoint(_parties(conv, sender=False)):
            return False
        if c.when is None:
            return True
        if not scope:
            scope.append(self._scope(conv))
        return scope[0] is not None and c.when(scope[0])

    def _scope(self, conv: Converted) -> Any:
        if conv.format == "kith":
            payload = getattr(conv.envelope, "payload", None)
            if payload is None:
                return None
            from adapters.kith.paths import XmlScope, bind

            if self._xml_prefixes is None:
                self._xml_prefixes = _prefixes(self._mappings_dir)
            root = payload.getroottree().getroot()
            return XmlScope(root, root, bind(root, self._xml_prefixes), set())
        from adapters.hl7v2.decode import decode
        from adapters.hl7v2.paths import Scope

        try:
            decoded = decode(_Raw(conv.raw), default_charset=self._charset, sender_charsets=self._sender_charsets)
        except MessageError:
            return None
        if conv.structure:
            decoded.message.structure = conv.structure
        return Scope(decoded.message)


class _Raw:
    __slots__ = ("data", "index")

    def __init__(self, data: bytes) -> None:
        self.index = 0
        self.data = data


def _restricts(c: _Compiled) -> bool:
    m = c.route.match
    return bool(m.format or c.codes or c.events or c.senders or c.receivers or c.when)


def _code(conv: Converted) -> str | None:
    """The message code, upper case on both sides of the comparison.

    Why: codes are case-blind to the people who write routes.yaml; `message_code: [adt]`
    matching nothing would settle every admission as `filtered`, answered AA, and lost.
    """
    code = conv.header.message_code if conv.header is not None else conv.message_type
    return code.upper() if code is not None else None


def _parties(conv: Converted, *, sender: bool) -> set[str]:
    """The names a message's sender (or receiver) answers to: application, facility, both joined by `@`, HER-id."""
    out: set[str] = set()
    h = conv.header
    if h is not None:
        app, fac = (h.sending_application, h.sending_facility) if sender else (h.receiving_application, h.receiving_facility)
        if app or fac:  # a KITH header names no HL7 parties: no bare "@"
            out.update(x for x in (app, fac, f"{app}@{fac}") if x)
    if conv.format == "kith" and conv.envelope is not None:
        party = conv.envelope.sender if sender else conv.envelope.receiver
        her = getattr(party, "her_id", None)
        if her:
            out.add(her)
    return out
