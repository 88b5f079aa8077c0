"""Which other records of a patient a resource names: the references the record checks are that patient's.

Why (patient safety): a dispense, administration, result or note names the order,
prescription, stay or report it belongs with, often by number alone (an RDS^O13
without an ENCODING group names its order by ORC-2). If the number is another
patient's, the record would hold patient B's dispense of patient A's
prescription. _transaction.py looks up each record named here and refuses the
message when it belongs to another patient; this module only reads the resource.

Every reference spelling FHIR R4 gives a transaction is read (the Reference datatype; §3.1.0.11.2):
a literal `Type/id` (a Bundle's `urn:uuid:` is rewritten to one before the check),
a conditional `Type?identifier=…` and a logical reference (`type` + `identifier`).
Not read, as naming nothing the record holds: a contained `#id`, another `urn:`,
an absolute URL (another server's), a logical reference without a plain type, and a
conditional one with a parameter the record does not search on.

Which references: those at the top level of the resource or one element down
(DocumentReference.context.encounter, Encounter.diagnosis.condition), except
- the resource's own `subject` and `patient`: they say whose it is;
- `focus`: FHIR R4 Observation.focus may name a parent, a fetus or a donor;
- extensions (their meaning is the profile's) and contained resources;
- references to types that are never a patient's record (UNOWNED: people, places,
  organisations, things, definitions): only a saving, as a target naming no
  patient passes anyway. Deeper references (Composition.section.section.entry) are
  not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.fhir._bundle import ID_RE, TYPE_RE, Criteria, parse_criteria
from adapters.fhir._search import SEARCH_PARAMS
from router.contracts import FhirJson
from router.errors import InvalidContent

UNOWNED = frozenset({
    "Patient", "RelatedPerson", "Person", "Group", "Practitioner", "PractitionerRole", "Organization", "OrganizationAffiliation",
    "Location", "HealthcareService", "Endpoint", "Device", "DeviceDefinition", "Medication", "MedicationKnowledge", "Substance",
    "BiologicallyDerivedProduct", "Binary", "Questionnaire", "PlanDefinition", "ActivityDefinition", "Library", "Measure",
    "ObservationDefinition", "SpecimenDefinition", "ValueSet", "CodeSystem", "StructureDefinition",
})
"""Types FHIR R4 never makes a patient's record: a reference to one is not looked up.

People (a RelatedPerson names a patient, but is a person, whom two siblings' records may both name),
places, organisations, things and definitions."""

_NOT_OWNERSHIP = frozenset({"subject", "patient", "focus", "extension", "modifierExtension", "contained", "meta", "text", "identifier"})
"""Top-level elements whose references do not say which of the patient's records this one belongs with (module docstring)."""


@dataclass(frozen=True, slots=True)
class Named:
    """One record a resource names: by id, or by the search that finds it (identifier, conditional reference)."""

    element: str  # where: `authorizingPrescription`, `context.encounter` (for the refusal's location)
    resource_type: str
    id: str | None
    criteria: Criteria | None


def named_records(resource: FhirJson) -> list[Named]:
    """The records *resource* names whose patient must be its own (module docstring says which).

    Written as plain loops over exact types, a reference to a person or place dropped by its
    first word: it runs for every new version of a patient's resource (an Encounter names a
    dozen places and people).
    """
    out: list[Named] = []
    for element, value in resource.items():
        kind = type(value)
        if kind is dict:
            items = [value]
        elif kind is list:
            items = value
        else:
            continue
        if element in _NOT_OWNERSHIP:
            continue
        for item in items:
            if type(item) is not dict:
                continue
            if "reference" in item or ("identifier" in item and "type" in item):
                _read(element, "", item, out)
                continue
            for member, inner in item.items():  # one element down: a BackboneElement's references
                if type(inner) is dict:
                    if "reference" in inner or ("identifier" in inner and "type" in inner):
                        _read(element, member, inner, out)
                elif type(inner) is list and member not in _EXTENSIONS:
                    for ref in inner:
                        if type(ref) is dict and ("reference" in ref or ("identifier" in ref and "type" in ref)):
                            _read(element, member, ref, out)
    return out


_EXTENSIONS = ("extension", "modifierExtension")


def _read(element: str, member: str, ref: dict[str, Any], out: list[Named]) -> None:
    """Add the records one Reference (at *element*, or its *member*) names: by its `reference`, and by its `identifier` too.

    A member named `reference` or `identifier` that is not a Reference's (an Identifier's own `type` is a
    CodeableConcept) names nothing here.
    """
    literal = ref.get("reference")
    if type(literal) is str and literal.partition("/")[0] not in UNOWNED:
        found = _literal(f"{element}.{member}" if member else element, literal)
        if found is not None:
            out.append(found)
    kind, ident = ref.get("type"), ref.get("identifier")
    if type(kind) is str and kind not in UNOWNED and type(ident) is dict and TYPE_RE.fullmatch(kind):
        value, system = ident.get("value"), ident.get("system")
        if isinstance(value, str) and value:
            # No system is the empty one the record indexes (`|value`), not any system: a bare number
            # must not find another system's record.
            token = f"{system if isinstance(system, str) else ''}|{value}"
            out.append(Named(f"{element}.{member}" if member else element, kind, None, (("identifier", token),)))


def _literal(element: str, reference: str) -> Named | None:
    """`Type/id` (a version suffix ignored) or `Type?search`; None for what names nothing the record holds."""
    if reference.startswith(("#", "urn:")) or "://" in reference:
        return None
    path, question, query = reference.partition("?")
    parts = path.split("/")
    kind = parts[0]
    if kind in UNOWNED or not TYPE_RE.fullmatch(kind):
        return None
    if question:
        if len(parts) != 1 or not query:
            return None
        try:
            criteria = parse_criteria(query, element)
        except InvalidContent:
            return None
        if any(name not in SEARCH_PARAMS or not value or (name == "patient" and "/" in value and not value.startswith("Patient/"))
               for name, value in criteria):
            return None  # a search the record cannot run (_search.py) names nothing it can check
        return Named(element, kind, None, criteria)
    if len(parts) not in (2, 4) or not ID_RE.fullmatch(parts[1]) or (len(parts) == 4 and parts[2] != "_history"):
        return None
    return Named(element, kind, parts[1], None)
