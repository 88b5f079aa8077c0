"""concat_text on an XML element: XHTML keeps its paragraphs, line breaks and table cells (the values a KITH path gives)."""

from __future__ import annotations

from lxml import etree

from adapters.kith.paths import NodeText
from router.mapping.library import LIBRARY, FnContext, _Values

XHTML = "http://www.w3.org/1999/xhtml"


def _element(markup: str) -> NodeText:
    node = etree.fromstring(f'<TextResultValue xmlns="http://www.kith.no/xmlstds/labsvar/2012-02-15">{markup}</TextResultValue>')
    value = NodeText("".join(node.itertext()).strip())  # what a path gives: the flattened text, remembering its element
    value.node = node
    return value


def _concat_text(*values: object) -> str | None:
    fn = LIBRARY["concat_text"]
    return fn.call(FnContext({}, None), _Values(list(values), [None] * len(values)))


def test_paragraphs_and_line_breaks_stay_apart():
    """A radiology report's conclusion and findings were run together ("jfr. kommentar.Leveren ses")."""
    value = _element(f'<div xmlns="{XHTML}"><p><strong>R: Forstørret lever.</strong></p><br/><p>Leveren ses  jevnt.<br/>Transittid ble ikke målt.</p></div>')
    assert _concat_text(value) == "R: Forstørret lever.\n\nLeveren ses jevnt.\nTransittid ble ikke målt."


def test_a_table_keeps_its_empty_cells():
    """Glucose 7.9 stays under its own day: the empty cell before it is kept, one row per line."""
    value = _element(
        f'<table xmlns="{XHTML}"><tr><th>Dato</th><th>28.04</th><th>29.04</th></tr>'
        "<tr><td>Glukose</td><td></td><td>7,9</td></tr></table>"
    )
    assert _concat_text(value) == "Dato | 28.04 | 29.04\nGlukose | | 7,9"


def test_a_heading_before_an_element():
    """`[Heading/@DN, '":"', TextResultValue]`: the separator stays with the heading, the element keeps its lines."""
    value = _element(f'<p xmlns="{XHTML}">Første.</p><p xmlns="{XHTML}">Andre.</p>')
    assert _concat_text("Anamnese", ":", value) == "Anamnese: Første.\n\nAndre."


def test_text_without_markup_is_its_text():
    """An element with only text (no XHTML children) reads as normalize-space() did."""
    value = _element("  Ingen   funn  ")
    assert _concat_text(value) == "Ingen funn"
