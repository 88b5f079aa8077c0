"""Build the FHIR bodies the REST face answers with: Bundles, outcomes, capabilities.

Pure functions from record results to JSON; routing and HTTP stay in rest.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from adapters.fhir._search import SEARCH_PARAMS
from adapters.fhir._store import StoredVersion
from router.contracts import ApplyResult, FhirJson

# Any resource type is stored; these are the ones the engine's mappings produce,
# listed so a client reading the CapabilityStatement finds them.
_TYPES = (
    "AllergyIntolerance", "Appointment", "Composition", "Condition", "Coverage", "DiagnosticReport",
    "DocumentReference", "Encounter", "EpisodeOfCare", "Flag", "Immunization", "Location",
    "MedicationAdministration", "MedicationRequest", "MedicationStatement", "Observation", "Organization",
    "Patient", "Practitioner", "PractitionerRole", "Procedure", "RelatedPerson", "ServiceRequest", "Specimen",
)
_PARAM_TYPES = {"_id": "token", "identifier": "token", "patient": "reference", "subject": "reference", "_tag": "token"}
_STATUS = {"created": "201 Created", "updated": "200 OK", "unchanged": "200 OK", "deleted": "200 OK"}


def outcome(code: str, reason: str, location: str | None = None) -> FhirJson:
    """Return an OperationOutcome with one error issue."""
    issue: FhirJson = {"severity": "error", "code": code, "diagnostics": reason}
    if location:
        issue["expression"] = [location]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def capability(base: str) -> FhirJson:
    """Return the CapabilityStatement: R4, JSON, the interactions and search params served."""
    resources = []
    for type_ in _TYPES:
        params = [p for p in SEARCH_PARAMS if not (type_ == "Patient" and p in ("patient", "subject"))]
        resources.append({
            "type": type_,
            "interaction": [{"code": c} for c in ("read", "vread", "history-instance", "search-type")],
            "versioning": "versioned",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalUpdate": True,
            "conditionalDelete": "multiple",
            "searchParam": [{"name": p, "type": _PARAM_TYPES[p]} for p in params],
        })
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date.today().isoformat(),
        "kind": "instance",
        "software": {"name": "Helsebro"},
        "implementation": {"description": "Helsebro shared record", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{"mode": "server", "resource": resources, "interaction": [{"code": "transaction"}]}],
    }


def searchset(resources: Sequence[FhirJson], base: str, *, total: int | None = None, next_url: str | None = None) -> FhirJson:
    """Return a searchset Bundle holding *resources*, all of them matches.

    *total* counts every match when *resources* is one page of them; *next_url* leads to the next page.
    """
    bundle: FhirJson = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources) if total is None else total,
        "entry": [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }
    if next_url is not None:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def history_bundle(type_: str, id_: str, versions: Sequence[StoredVersion], base: str) -> FhirJson:
    """Return a history Bundle for one resource, newest version first."""
    entries = []
    for v in versions:
        entry: FhirJson = {"fullUrl": f"{base}/{type_}/{id_}"}
        if v.deleted:
            entry["request"] = {"method": "DELETE", "url": f"{type_}/{id_}"}
        else:
            entry["resource"] = v.resource
            entry["request"] = {"method": "PUT", "url": f"{type_}/{id_}"}
        entry["response"] = {
            "status": "201 Created" if v.version == 1 else "200 OK",
            "etag": f'W/"{v.version}"',
            "lastModified": v.last_updated,
        }
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "history", "total": len(entries), "entry": entries}


def transaction_response(result: ApplyResult) -> FhirJson:
    """Return the transaction-response Bundle for an applied transaction."""
    entries = []
    for e in result.entries:
        response: FhirJson = {"status": _STATUS[e.outcome]}
        if e.version:
            response["location"] = f"{e.resource_type}/{e.id}/_history/{e.version}"
            response["etag"] = f'W/"{e.version}"'
        entries.append({"response": response})
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
