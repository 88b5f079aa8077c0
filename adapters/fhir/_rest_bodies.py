"""Build the FHIR bodies the REST face answers with: Bundles, outcomes, capabilities.

Pure functions from record results to JSON; routing and HTTP stay in rest.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from adapters.fhir._search import INDEXED_TAG_SYSTEMS, SEARCH_PARAMS
from adapters.fhir._store import StoredVersion
from router.contracts import ApplyResult, FhirJson

# Any resource type is stored; these are the ones the engine's mappings produce,
# listed so a client reading the CapabilityStatement finds them.
_TYPES = (
    "AllergyIntolerance", "Appointment", "Communication", "CommunicationRequest", "Composition", "Condition",
    "Consent", "Coverage", "DiagnosticReport", "DocumentReference", "Encounter", "EpisodeOfCare", "Flag",
    "Immunization", "List", "Location", "MedicationAdministration", "MedicationDispense", "MedicationRequest",
    "MedicationStatement", "Observation", "Organization", "Patient", "Practitioner", "PractitionerRole",
    "Procedure", "RelatedPerson", "ServiceRequest", "Specimen",
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
    """Return the CapabilityStatement: what this server does, and nothing it does not.

    A resource's endpoint reads, vreads, shows history and searches; it creates, updates,
    patches or deletes nothing (405), so it claims no create, update, patch or delete and none
    of their conditional forms: a client that read `conditionalCreate: true` would POST
    `Patient` with If-None-Exist and get 405. Those are done as entries of a transaction
    Bundle, which rest.documentation describes.
    """
    resources = []
    for type_ in _TYPES:
        params = [p for p in SEARCH_PARAMS if not (type_ == "Patient" and p in ("patient", "subject"))]
        resources.append({
            "type": type_,
            "interaction": [{"code": c} for c in ("read", "vread", "history-instance")] + [{"code": "search-type", "documentation": _SEARCH_DOC}],
            "versioning": "versioned",
            "readHistory": True,
            "updateCreate": False,
            "conditionalCreate": False,
            "conditionalRead": "not-match",  # If-None-Match with the ETag of a read or vread: 304
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
            "searchParam": [_search_param(p) for p in params],
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
        "rest": [{
            "mode": "server",
            "documentation": _TRANSACTION_DOC,
            "resource": resources,
            "interaction": [{"code": "transaction", "documentation": _TRANSACTION_DOC}],
        }],
    }


_TRANSACTION_DOC = (
    "Writes are transaction Bundles POSTed to the base, all-or-nothing (no batch). An entry may be a PUT of Type/id"
    " (creating it when absent) or a conditional PUT of Type?search, a POST (with ifNoneExist: a conditional"
    " create), a DELETE of Type/id or of Type?search (every match), or a PATCH (FHIRPath Patch of top-level"
    " elements). A condition matching several resources fails the transaction with 412."
)
_SEARCH_DOC = (
    "By GET [type]?params or POST [type]/_search with an application/x-www-form-urlencoded form (its parameters"
    " ANDed with the URL's). A parameter's a,b values match either; an unknown parameter is refused 400 unless"
    " Prefer: handling=lenient. Matches come in id order, _count a page (100 unless asked, 0 to 1000), with self and"
    " next links; next names the last id shown (_after). A POST search's links name none of its values: self is"
    " [type]/_search, next is [base]?_getpages=<id>&_after=<id>, the search kept in this server process's memory for"
    " 10 minutes after its last page; an unknown or expired id (another process's too) answers 410: search again."
)
_PARAM_DOCS = {
    "_tag": "Only the tags of system " + " and ".join(INDEXED_TAG_SYSTEMS) + " are indexed, as system|code.",
    "patient": "The resource's top-level subject or patient reference.",
    "subject": "The resource's top-level subject reference.",
}


def _search_param(name: str) -> FhirJson:
    param: FhirJson = {"name": name, "type": _PARAM_TYPES[name]}
    if name in _PARAM_DOCS:
        param["documentation"] = _PARAM_DOCS[name]
    return param


def searchset(resources: Sequence[FhirJson], base: str, *, total: int | None = None, links: Sequence[tuple[str, str]] = ()) -> FhirJson:
    """Return a searchset Bundle holding *resources*, all of them matches.

    *total* counts every match when *resources* is one page of them; *links* are (relation, url):
    `self` the search as asked, `next` the page after this one.
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
    if links:
        bundle["link"] = [{"relation": relation, "url": url} for relation, url in links]
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
