"""Provenance: every resource in the record says which mapping (file and content hash) made it."""

from __future__ import annotations

from adapters.fhir.record import open_record
from router.testing import adt_message, isolated_settings, publish, run_engine_in_thread, wait_until

FNR = "15866112379"


class TestProvenance:
    def test_stored_resources_name_their_mapping(self, tmp_path):
        """After the engine applies an ADT, the Patient and Encounter in the record carry the ADT_A01 mapping's tag."""
        settings = isolated_settings(tmp_path)
        handle = run_engine_in_thread(settings)
        record = open_record(settings)
        try:
            publish(settings, [adt_message("A01", control_id="P1", fnr=FNR, local_id="L1", visit="V1")])
            wait_until(lambda: handle.stats.applied == 1, timeout=30, what="applied")
            [patient] = record.search("Patient", {"identifier": f"urn:oid:2.16.578.1.12.4.1.4.1|{FNR}"})
            [encounter] = record.search("Encounter", {"subject": f"Patient/{patient['id']}"})
            for resource in (patient, encounter):
                [tag] = [t for t in resource["meta"]["tag"] if t["system"] == "urn:helsebro:mapping"]
                structure, digest = tag["code"].split("@")
                assert structure == "ADT_A01" and len(digest) == 12
                assert tag["display"] == "mappings/hl7v2/messages/ADT_A01.yaml"
        finally:
            record.close()
            handle.stop()
