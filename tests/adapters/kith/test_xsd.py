"""Tests for adapters/kith/xsd.py: catalog, local-only resolution, combined schemas, cache."""

from __future__ import annotations

import select
import socket
from pathlib import Path

import pytest
from lxml import etree

from adapters.kith.errors import SchemaInvalid
from adapters.kith.xsd import SchemaSet, schema_set, validation_status
from router.errors import ConfigError, UnknownMessage

from .conftest import PLO_16

MSGHEAD = "http://www.kith.no/xmlstds/msghead/2006-05-24"
PLO_NS = "http://www.kith.no/xmlstds/po/Pasientlogistikk/2012-04-01"


def _tiny_folder(tmp_path: Path, import_location: str) -> Path:
    """A schema folder whose one schema imports *import_location*."""
    (tmp_path / "ehelseCatalog.xml").write_text(
        '<catalog xmlns="urn:oasis:names:tc:entity:xmlns:xml:catalog"><uri name="urn:t" uri="t.xsd"/></catalog>', encoding="utf-8"
    )
    (tmp_path / "t.xsd").write_text(
        '<schema xmlns="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:t">'
        f'<import namespace="urn:other" schemaLocation="{import_location}"/>'
        '<element name="a" type="string"/></schema>',
        encoding="utf-8",
    )
    return tmp_path


class TestSchemaSet:
    def test_catalog_read(self, schemas):
        """The catalog maps MsgHead and AppRec namespaces to files that exist, despite its Windows spelling."""
        assert schemas.knows(MSGHEAD)
        assert schemas.knows("http://www.kith.no/xmlstds/apprec/2012-02-15")
        assert not schemas.knows("urn:nobody")

    def test_versions_read(self, schemas):
        """MeldingsVersjoner.xml gives the standard's name and version for a namespace."""
        assert schemas.version_of(PLO_NS) == ("Pasientlogistikk-v1.6", "1.6")

    def test_msghead_with_payload_validates(self, schemas, example):
        """A MsgHead validates with the payload's namespace compiled in beside it."""
        schemas.validate(etree.fromstring(example(PLO_16)), (MSGHEAD, PLO_NS))

    def test_msghead_alone_rejects_payload(self, schemas, example):
        """Content is processContents=strict: without the payload schema the message fails."""
        with pytest.raises(SchemaInvalid):
            schemas.validate(etree.fromstring(example(PLO_16)), (MSGHEAD,))

    def test_payload_error_found(self, schemas, example):
        """A wrong element inside the payload fails validation with its XPath and no message values."""
        data = example(PLO_16).replace(b"<Anslag>false</Anslag>", b"<Anslag>kanskje</Anslag>")
        with pytest.raises(SchemaInvalid) as caught:
            schemas.validate(etree.fromstring(data), (MSGHEAD, PLO_NS))
        assert "Anslag" in (caught.value.location or "")
        assert "kanskje" not in caught.value.reason

    def test_unknown_namespace(self, schemas):
        """A namespace the catalog lacks is UnknownMessage (T10)."""
        with pytest.raises(UnknownMessage):
            schemas.validate(etree.fromstring(b"<a xmlns='urn:nobody'/>"), ("urn:nobody",))

    def test_compiled_once(self, schemas, example):
        """A namespace set is compiled on first use and reused after."""
        doc = etree.fromstring(example(PLO_16))
        schemas.validate(doc, (MSGHEAD, PLO_NS))
        compiled = schemas._compiled[(MSGHEAD, PLO_NS)]
        schemas.validate(doc, (MSGHEAD, PLO_NS))
        assert schemas._compiled[(MSGHEAD, PLO_NS)] is compiled

    def test_one_set_per_folder(self, norsk):
        """schema_set returns the same SchemaSet for the same folder, however it is spelled."""
        assert schema_set(norsk / "skjema") is schema_set(norsk / "skjema" / ".." / "skjema")

    def test_off_without_folder(self):
        """No folder means no SchemaSet and a status line that says validation is off."""
        assert schema_set(None) is None
        assert "off" in validation_status(None)

    def test_status_on(self, norsk):
        """The status line names the folder and how many namespaces it knows."""
        assert validation_status(norsk / "skjema").startswith("XML schema validation on:")

    def test_missing_catalog(self, tmp_path):
        """A folder without ehelseCatalog.xml is a ConfigError."""
        with pytest.raises(ConfigError):
            SchemaSet(tmp_path)

    def test_remote_import_refused_without_connecting(self, tmp_path):
        """An import from an unknown URL fails the compile (T10) and nothing connects."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        try:
            folder = _tiny_folder(tmp_path, f"http://127.0.0.1:{sock.getsockname()[1]}/evil.xsd")
            with pytest.raises(UnknownMessage, match="does not compile"):
                SchemaSet(folder).validate(etree.fromstring(b"<a xmlns='urn:t'/>"), ("urn:t",))
            assert not select.select([sock], [], [], 0)[0]
        finally:
            sock.close()

    def test_a_broken_schema_is_reported_without_this_servers_paths(self, tmp_path):
        """A schema file of the folder that is not a schema: T10 naming the file within the folder, never the server's path (the reason reaches the sender's AppRec)."""
        folder = _tiny_folder(tmp_path, "other.xsd")
        (folder / "other.xsd").write_text("<not-a-schema/>", encoding="utf-8")
        with pytest.raises(UnknownMessage, match="does not compile") as err:
            SchemaSet(folder).validate(etree.fromstring(b"<a xmlns='urn:t'/>"), ("urn:t",))
        assert "other.xsd" in err.value.reason
        assert str(tmp_path) not in err.value.reason and "file:" not in err.value.reason

    def test_import_outside_folder_refused(self, tmp_path):
        """An import of a file outside the folder fails the compile instead of reading it."""
        outside = tmp_path / "outside.xsd"
        outside.write_text('<schema xmlns="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:other"/>', encoding="utf-8")
        folder = tmp_path / "skjema"
        folder.mkdir()
        _tiny_folder(folder, outside.as_uri())
        with pytest.raises(UnknownMessage):
            SchemaSet(folder).validate(etree.fromstring(b"<a xmlns='urn:t'/>"), ("urn:t",))

    def test_known_remote_import_mapped(self, tmp_path):
        """An import of a well-known URL resolves to the folder's own copy by file name."""
        (tmp_path / "w3c").mkdir()
        (tmp_path / "w3c" / "other.xsd").write_text('<schema xmlns="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:other"/>', encoding="utf-8")
        folder = _tiny_folder(tmp_path, "http://www.w3.org/TR/other.xsd")
        SchemaSet(folder).validate(etree.fromstring(b"<a xmlns='urn:t'>x</a>"), ("urn:t",))


class TestUncatalogued:
    def test_a_schema_the_catalog_misses_is_found_by_its_namespace(self, tmp_path):
        """A file declaring a namespace the catalog lacks is used; one declared twice stays unknown (not guessed)."""
        folder = _tiny_folder(tmp_path, "t.xsd")
        (folder / "extra.xsd").write_text('<schema xmlns="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:extra"><element name="b" type="string"/></schema>', encoding="utf-8")
        for name in ("twin1.xsd", "twin2.xsd"):
            (folder / name).write_text('<schema xmlns="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:twin"/>', encoding="utf-8")
        (folder / "broken.xsd").write_text("<schema", encoding="utf-8")
        s = SchemaSet(folder)
        assert s.knows("urn:extra") and s.knows("urn:t")
        assert not s.knows("urn:twin")
        s.validate(etree.fromstring('<b xmlns="urn:extra">x</b>'), ("urn:extra",))
        with pytest.raises(SchemaInvalid):
            s.validate(etree.fromstring('<b xmlns="urn:extra"><c/></b>'), ("urn:extra",))

    def test_national_m912_of_2014_is_known(self, schemas):
        """The national catalog has no line for e-resept M9.12 of 2014-01-21; its XSD is in the folder all the same."""
        assert schemas.knows("http://www.kith.no/xmlstds/eresept/m912/2014-01-21")
