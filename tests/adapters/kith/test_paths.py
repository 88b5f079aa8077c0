"""XPath sources read without the XPath engine must answer exactly as the engine would.

adapters/kith/paths.py reads most mapping paths (`@V`, `po:Kode/@V`,
`*[local-name()="Id"]`, `../po:X`, `mh:Id|fk1:Id`) through a plan of child
steps over a per-message index of children instead of lxml's XPath. These tests
run every path the KITH mappings use both ways, from every element of national
examples and of a document built to hold the awkward cases, and require the
same values, positions, groups and the same elements recorded as read.
"""

from __future__ import annotations

from typing import Any

import pytest
from lxml import etree

from adapters.kith._plans import _function, _plan
from adapters.kith.paths import NodeText, XmlPath, XmlScope, bind, path_compiler, unmapped
from adapters.kith.safe_xml import parse_xml
from router.mapping import MappingSet
from router.mapping.mapping_set import load_namespaces
from router.settings import PROJECT_ROOT
from tests.adapters.kith.conftest import FAMILIES, examples

KITH = PROJECT_ROOT / "mappings" / "kith"
PREFIXES = load_namespaces(KITH / "namespaces.yaml")

# Namespaces, comments, PIs, unprefixed elements, blank attributes, nesting, mixed content.
AWKWARD = b"""<?xml version="1.0" encoding="UTF-8"?>
<r:Root xmlns:r="http://www.kith.no/xmlstds/msghead/2006-05-24" xmlns:f="http://www.kith.no/xmlstds/felleskomponent1" V="root">
  <!-- a comment among the children -->
  <r:Ident><r:Id> 1 </r:Id><r:TypeId V=" HER " DN="HER-id"/></r:Ident>
  <?pi between?>
  <r:Ident><f:Id>2</f:Id><Id>3</Id><r:TypeId V="  "/><f:TypeId V="ENH"/><TypeId V="X"/></r:Ident>
  <r:Ident/>
  <Id>bare</Id>
  <r:Organisation><r:OrganisationName>Ytre<!-- c --> del</r:OrganisationName>
    <r:Organisation><r:OrganisationName>Indre</r:OrganisationName><r:Ident><r:Id>9</r:Id></r:Ident></r:Organisation>
  </r:Organisation>
  <r:Empty V=""/><r:Coded V="K" S="1.2" DN="Kode"/><r:Text>  tekst <f:b>fet</f:b> slutt </r:Text>
</r:Root>"""


# Elements nested in elements of their own name, so `//` answers must be put back in document order.
NESTED = b"""<r:Root xmlns:r="http://www.kith.no/xmlstds/msghead/2006-05-24" xmlns:f="http://www.kith.no/xmlstds/felleskomponent1">
  <r:Organisation><r:Id>1</r:Id><r:Organisation><r:Id>2</r:Id><f:Id>2b</f:Id><r:Organisation><r:Id V="v3">3</r:Id></r:Organisation></r:Organisation><r:Id>4</r:Id>
    <r:Ident><r:Id V="v5">5</r:Id></r:Ident></r:Organisation>
  <r:Ident><r:Organisation><r:Id>6</r:Id></r:Organisation><r:Id>7</r:Id></r:Ident>
</r:Root>"""


# XML whitespace (tab, CR, LF, space) next to other white space (NBSP, EM SPACE), which normalize-space() keeps.
SPACES = """<r:Root xmlns:r="http://www.kith.no/xmlstds/msghead/2006-05-24" V=" a&#9;b&#13;&#10; c ">
  <r:Text>&#160; x &#9;&#13; y&#160;<!-- c --> z </r:Text><r:Coded V="&#160;v&#160;" DN=" d&#13;o:o " />
  <r:Ident><r:Id> 1 2 </r:Id><r:TypeId V=" a:b "/></r:Ident><r:Empty V=""/>
</r:Root>""".encode()


def _mapping_paths() -> list[str]:
    """Every distinct path text the KITH mappings compile."""
    texts: set[str] = set()
    compile_path = path_compiler(PREFIXES)

    def recording(text: str) -> XmlPath:
        path = compile_path(text)
        texts.add(path.text)
        return path

    MappingSet.load(KITH, recording)
    return sorted(texts)


PATHS = _mapping_paths()
EXTRA = [
    "@V", "@DN", ".", "..", "../..", "../@V", "*", "*/@V", "mh:Ident", "mh:Ident/mh:Id", "mh:Ident/*",
    "mh:Id|fk1:Id|*[local-name()=\"Id\"]", "fk1:Id | mh:Id", "*[local-name()='TypeId']/@V",
    "mh:Ident/mh:TypeId/@V|mh:Ident/fk1:TypeId/@V", "mh:Organisation/mh:Organisation/mh:OrganisationName",
    "mh:Text", "mh:Empty/@V", "mh:Coded", "../mh:Ident/mh:Id", "*[local-name()=\"Organisation\"]/*",
    # Absolute and `//` paths, and unions of different shapes: answers merged in document order.
    "/mh:Root", "/mh:Root/mh:Ident/mh:Id", "/*/*[local-name()=\"Ident\"]/@V", "/fk1:Root", "//mh:Id", "//mh:Ident/mh:Id",
    "//mh:Organisation/mh:OrganisationName", "//mh:Organisation//mh:Id", "//*//mh:Id", "//mh:Organisation//*",
    "//*[local-name()=\"Id\"]", "//*", "//*/@V", ".//mh:Id", ".//*", "..//mh:OrganisationName", "../..//*/@V",
    "mh:Organisation//mh:OrganisationName", "mh:Ident//mh:Id|mh:Ident//fk1:Id", "mh:Ident/mh:Id | ../mh:Id", "//mh:Id | mh:Ident/fk1:Id",
    "//mh:Organisation/mh:Id", "//mh:Organisation/mh:Id/@V", "//mh:Organisation//mh:Ident/mh:Id", "//mh:Ident//mh:Organisation/mh:Id",
    "//mh:Organisation/*[local-name()=\"Id\"]", "mh:Organisation//mh:Organisation/mh:Id|mh:Organisation//mh:Organisation/fk1:Id",
    "//mh:Coded/@V | //mh:TypeId/@V | @V", "mh:Organisation | //mh:OrganisationName", "//fk1:Id|//mh:Id|//*[local-name()='Id']",
    # Predicates that test whether a path selects anything, and the self axis.
    "mh:Ident[mh:Id]", "mh:Ident[not(mh:Id)]", "*[@V]", "*[not(@V)]", "mh:Ident[fk1:Id|mh:TypeId]/mh:TypeId/@V", "//mh:Organisation[mh:Ident]",
    "//mh:Id[not(../../@V)]", "mh:Ident/mh:Id[../mh:TypeId/@DN]", "//*[not(*)][not(@V)]", "self::*", "self::mh:Ident", 'self::*[local-name()="Id"]',
    "self::*[not(@V)]", "self::*[mh:Organisation]/mh:Id", "mh:Organisation[mh:Organisation[mh:Ident]]/mh:OrganisationName", "mh:Ident[..]",
    "mh:Ident[mh:Id] | mh:Organisation[not(mh:Id)]", "//mh:Organisation/mh:Id[not(../mh:Ident)] | /mh:Root/mh:Ident/mh:Id", "..[mh:Id]/@V",
    # String functions over literals and planned paths.
    "local-name()", "normalize-space(.)", "normalize-space()", "normalize-space(mh:Text)", "string(mh:Coded/@DN)", "string(mh:Ident)",
    'concat(mh:Ident/mh:TypeId/@V, ":", mh:Coded/@DN)', 'concat(*/@V, "|", ../@V, "|", mh:Empty/@V)', 'normalize-space(concat(" a ", mh:Text, .))',
    'substring-after(mh:Coded/@DN, "o")', 'substring-before(mh:Coded/@DN, "d")', 'substring-after(@V, "")', 'substring-before(mh:Nothing/@V, "x")',
    'normalize-space(substring-before(mh:Text, "fet"))', 'concat(.., "x")', "normalize-space(*)",
    # Positions over a parenthesised path's answer in document order, and comparisons with a string.
    "(//mh:Id)[1]", "(//mh:Id)[2]", "(//mh:Id)[last()]", "(//mh:Id/@V)[1]", "(//mh:Id/@V)[last()]", "(//mh:TypeId/@V)[last()]", "(//*)[3]",
    "(mh:Ident/mh:Id | ../mh:Id)[1]", "(mh:Ident/*)[1]/@V", "(mh:Ident/*)[@V][1]/@V", "(//mh:Organisation)[mh:Ident][last()]",
    "(mh:Ident | mh:Organisation)[not(mh:Id)]", "(//mh:Organisation/mh:Id)[last()]", '(//mh:Id)[@V = "v5"]', "(mh:Ident|../mh:Ident)/@V",
    'mh:Ident[mh:TypeId/@V = " HER "]', 'mh:Ident[mh:TypeId/@V != "X"]', "mh:Ident[mh:Id = ' 1 ']", '*[@V = ""]', '*[. = "bare"]',
    "//mh:Ident[mh:Id = '9' or fk1:Id = '2']/mh:TypeId/@V", 'mh:Ident[not(*/@V = "ENH")]', "mh:Organisation[mh:OrganisationName = 'Ytre del']",
    '//mh:Organisation[mh:Id = "2" or mh:Id != "1"]/mh:Id', '(//mh:Organisation[mh:Id = "2"]/fk1:Id)[1]', '(//mh:Ident/mh:Id)[. = "5"]',
]
PLANNED = [t for t in dict.fromkeys(PATHS + EXTRA) if _plan(t) is not None or _function(t) is not None]


def _documents() -> list[tuple[str, bytes]]:
    docs = [("awkward", AWKWARD), ("nested", NESTED), ("spaces", SPACES)]
    for family in FAMILIES:
        found = examples(family)
        for path in dict.fromkeys(found[:1] + found[-1:]):
            docs.append((str(path.relative_to(path.parents[2])), path.read_bytes()))
    return docs


def _observed(path: XmlPath, root: Any, node: Any, binding: Any) -> tuple[Any, ...]:
    """Everything a mapping can see of one path's answer, each way of asking it from a fresh scope."""
    out: list[Any] = []
    for ask in ("resolve", "values", "reader"):
        scope = XmlScope(root, node, binding, set())
        if ask == "resolve":
            answer: Any = [
                (str(i.raw), isinstance(i.raw, NodeText), getattr(i.raw, "node", None), i.group, i.location) for i in path.resolve(scope)
            ]
        elif ask == "values":
            answer = [(str(v), isinstance(v, NodeText)) for v in path.values(scope)]
        else:
            value = path.reader()(scope)
            answer = (value if value is None else str(value), isinstance(value, NodeText))
        out.append((ask, answer, {id(el) for el in scope.reads}))
    return tuple(out)


def test_the_mappings_mostly_skip_the_xpath_engine() -> None:
    """The plan covers the everyday paths; if this drops, a mapping change lost the fast route."""
    assert len(PLANNED) > 200
    for text in ("@V", ".", "po:Kode/@V", '*[local-name()="Id"]', "../@komponentID", 'mh:Id|fk1:Id|*[local-name()="Id"]'):
        assert _plan(text) is not None, text


@pytest.mark.parametrize(
    "text",
    ['""', "local-name()", "po:A[1]", "po:A/text()", "ancestor::mh:MsgHead", "po:A[@V = 1]", "po:A[@V <= 'x']", "po:A[po:B = po:C]",
     "@V|@DN", "po:A/@*", "/", "//@V", "po:A//@V", "./po:A", "po:A/../po:B", ".|po:A", "//po:A[1]", "(//po:A/@V)[po:B]", "(//po:A)[0]",
     "(po:A)[1] | po:B", "(po:A/@V)[1]/@DN", "po:A[not(po:B) and po:C]", "po:A[not(po:B) or not(po:C)]", "/self::po:A", "po:A//self::po:B",
     "po:A[last()]", "po:A[po:B[1]]"],
)
def test_what_the_plan_leaves_to_xpath(text: str) -> None:
    """Positions on steps, numeric and path comparisons, other axes and functions, `.` and `..` past the start, and unions of different attributes go to the XPath engine."""
    assert _plan(text) is None


@pytest.mark.parametrize(
    "text", ["count(po:A)", "substring(po:A/@V, 1, 10)", "local-name(..)", 'concat("a")', "normalize-space(po:A, po:B)", "string-length(.)", "concat(po:A[1], 'x')"],
)
def test_what_string_functions_leave_to_xpath(text: str) -> None:
    """Only local-name(), normalize-space(), string(), concat() and substring-after/-before() over literals and planned paths skip the engine."""
    assert _function(text) is None


@pytest.mark.parametrize(
    "text",
    ["//po:X", "/mh:MsgHead", ".//po:X", "rq:Comment|../rq:Comment", "mh:A/mh:B|fk1:C/mh:B", "po:A//po:B/@V", "//po:A | //po:B", "self::*",
     'self::*[local-name()="X"]', "self::*[not(@a)]", "po:A[not(../../@a)]", "//po:A[po:B]", "rq:Comment[rq:A|rq:B]", "po:A[po:B/@V]/po:C",
     "(rq:Priority|../rq:Priority)/@V", "po:A[@V = 'x']", "po:A[@V != 'x' or po:B]", "(//po:A/@V)[last()]", "(po:A|po:B)[po:C][1]/@V"],
)
def test_what_the_plan_reads_beyond_child_steps(text: str) -> None:
    """Absolute paths, `//` steps, unions whose members differ, the self axis, existence and string comparison predicates,
    and positions over a parenthesised path read without the XPath engine."""
    assert _plan(text) is not None


@pytest.mark.parametrize(("name", "data"), _documents(), ids=lambda v: v if isinstance(v, str) else "")
def test_planned_paths_answer_as_xpath_does(name: str, data: bytes) -> None:
    """From every element (the root too, where `..` leaves the tree), each planned path gives what XPath gives."""
    root = parse_xml(data).getroot()
    binding = bind(root, PREFIXES)
    compile_path = path_compiler(PREFIXES)
    nodes = list(root.iter(etree.Element))
    for text in PLANNED:
        planned = compile_path(text)
        engine = compile_path(text)
        engine._plan = engine._fn = None  # the XPath engine, as before plans existed
        engine.values = engine._make_values()  # values() is made once, from the plan
        for node in nodes:
            assert _observed(planned, root, node, binding) == _observed(engine, root, node, binding), (text, name, node.tag)


def test_bind_shares_one_tuple_per_binding() -> None:
    """XmlPath recognises a binding by identity, so equal bindings must be the same object."""
    first = bind(parse_xml(AWKWARD).getroot(), PREFIXES)
    again = bind(parse_xml(AWKWARD).getroot(), PREFIXES)
    assert first == again and first is again


def test_unmapped_names_positions_by_local_name() -> None:
    """Repeated siblings get an index, comments are skipped, envelope-only leaves are not listed."""
    root = parse_xml(AWKWARD).getroot()
    assert unmapped(root, set()) == [
        "/Root/Ident[1]/Id",
        "/Root/Ident[1]/TypeId",
        "/Root/Ident[2]/Id[1]",
        "/Root/Ident[2]/Id[2]",
        "/Root/Ident[2]/TypeId[1]",
        "/Root/Ident[2]/TypeId[2]",
        "/Root/Ident[2]/TypeId[3]",
        "/Root/Id",
        "/Root/Organisation/OrganisationName",
        "/Root/Organisation/Organisation/OrganisationName",
        "/Root/Organisation/Organisation/Ident/Id",
        "/Root/Empty",
        "/Root/Coded",
        "/Root/Text/b",
    ]
    ident = root.find("{http://www.kith.no/xmlstds/msghead/2006-05-24}Ident")
    assert "/Root/Ident[1]/Id" not in unmapped(root, {ident})


def test_element_text_is_all_text_below_it_stripped() -> None:
    """A leaf's own text, or every text below an element with children (comments add none)."""
    from adapters.kith.paths import _text

    root = parse_xml(AWKWARD).getroot()
    for element in root.iter(etree.Element):
        text = _text(element)
        assert text == "".join(element.itertext()).strip() and text.node is element
    ns = "{http://www.kith.no/xmlstds/msghead/2006-05-24}"
    assert _text(root.find(f"{ns}Organisation/{ns}OrganisationName")) == "Ytre del"
    assert _text(root.find(f"{ns}Text")) == "tekst fet slutt"


@pytest.mark.parametrize(("name", "data"), _documents()[:4], ids=lambda v: v if isinstance(v, str) else "")
def test_message_scope_answers_as_a_plain_scope(name: str, data: bytes) -> None:
    """message_scope keeps every element's proxy for the message; the binding and every answer stay the same."""
    from adapters.kith.paths import message_scope

    root = parse_xml(data).getroot()
    scope = message_scope(root, PREFIXES)
    assert scope.bindings is bind(root, PREFIXES) and scope.node is root and not scope.reads
    compile_path = path_compiler(PREFIXES)
    for text in PLANNED:
        path = compile_path(text)
        plain = XmlScope(root, root, bind(root, PREFIXES), set())
        fresh = message_scope(root, PREFIXES)
        assert [(str(i.raw), i.group, i.location) for i in path.resolve(fresh)] == [(str(i.raw), i.group, i.location) for i in path.resolve(plain)]
        assert fresh.reads == plain.reads, text


def test_an_element_item_makes_its_text_when_asked() -> None:
    """An element with children is an item (a group) whatever its text; its text is the element's, made once."""
    root = parse_xml(AWKWARD).getroot()
    scope = XmlScope(root, root, bind(root, PREFIXES), set())
    [item] = path_compiler(PREFIXES)("mh:Organisation").resolve(scope)
    assert item.group is not None and item._raw is None
    assert item.raw == "Ytre del\n    Indre9"
    assert isinstance(item.raw, NodeText) and item.raw.node is item.group and item.raw is item.raw


@pytest.mark.parametrize(("name", "data"), _documents()[:5], ids=lambda v: v if isinstance(v, str) else "")
def test_one_message_scope_answers_every_path_twice_alike(name: str, data: bytes) -> None:
    """Values read again in the same message (kept per element) and the shared children index give what a fresh scope gives."""
    from adapters.kith.paths import message_scope

    root = parse_xml(data).getroot()
    compile_path = path_compiler(PREFIXES)
    paths = [compile_path(text) for text in PLANNED]
    shared = message_scope(root, PREFIXES)
    for _ in range(2):
        for node in root.iter(etree.Element):
            scope = shared.child(group=node)
            for path in paths:
                fresh = XmlScope(root, node, shared.bindings, set())
                assert path.values(scope) == path.values(fresh), (path.text, node.tag)
                assert path.reader()(scope) == path.reader()(fresh), (path.text, node.tag)


@pytest.mark.parametrize(("name", "data"), _documents(), ids=lambda v: v if isinstance(v, str) else "")
def test_unmapped_with_the_children_index_is_unmapped_without(name: str, data: bytes) -> None:
    """unmapped() walks the children index the mapping built where there is one, and labels as where() does."""
    from adapters.kith.paths import _ENVELOPE_ONLY, message_scope, where

    elements = list(parse_xml(data).getroot().iter(etree.Element))
    root = elements[0]
    scope = message_scope(root, PREFIXES)
    reading = [path_compiler(PREFIXES)(text) for text in ("*", "*/*", '*[local-name()="Id"]', "mh:Ident/@V", "fk1:Id")]
    for node in elements[::3]:
        for path in reading:
            path.values(scope.child(group=node))
    assert unmapped(root, scope.reads, scope.results) == unmapped(root, scope.reads)
    leaves = [
        el for el in elements
        if next(el.iterchildren(etree.Element), None) is None
        and ((el.text or "").strip() or el.get("V") is not None)
        and el.tag.rpartition("}")[2] not in _ENVELOPE_ONLY
    ]
    assert unmapped(root, set()) == [where(el) for el in leaves]


def _position(element: Any) -> str:
    """An element's position worked out on its own, from the root down: local names, indexed among element siblings sharing one."""
    steps = []
    while element is not None:
        parent = element.getparent()
        name = etree.QName(element).localname
        if parent is not None:
            same = [c for c in parent.iterchildren(etree.Element) if etree.QName(c).localname == name]
            name += f"[{same.index(element) + 1}]" if len(same) > 1 else ""
        steps.append(name)
        element = parent
    return "/" + "/".join(reversed(steps))


def test_positions_index_shared_local_names_asked_in_any_order() -> None:
    """One message's positions, asked last element first, index the siblings that share a local name (across namespaces) and only those."""
    from adapters.kith.paths import message_scope

    root = parse_xml(AWKWARD).getroot()
    scope = message_scope(root, PREFIXES)
    items = path_compiler(PREFIXES)("//*").resolve(scope)
    asked = [item.location for item in reversed(items)][::-1]
    assert asked == [_position(item.group) for item in items]
    assert {"/Root/Ident[2]/Id[2]", "/Root/Ident[2]/TypeId[3]", "/Root/Id", "/Root/Organisation/Organisation/Ident/Id"} <= set(asked)
    attribute = path_compiler(PREFIXES)("@V")
    for element in reversed(list(root.iter(etree.Element))):
        assert scope.child(group=element).value_loc == _position(element)
        assert [item.location for item in attribute.resolve(scope.child(group=element))] == [_position(element) + "/@V"] * bool((element.get("V") or "").strip())


def test_each_message_names_its_own_positions() -> None:
    """Messages read in turn, each parsed after the last was freed (lxml reuses its proxies' memory), name their own elements' positions."""
    import gc

    from adapters.kith.paths import message_scope

    every = path_compiler(PREFIXES)("//*")
    for data in (NESTED, AWKWARD, NESTED, SPACES, AWKWARD):
        root = parse_xml(data).getroot()
        scope = message_scope(root, PREFIXES)
        items = every.resolve(scope)
        assert len(items) > 5 and [item.location for item in items] == [_position(item.group) for item in items]
        del root, scope, items
        gc.collect()


def test_a_message_s_positions_go_with_it() -> None:
    """Positions kept for a message, and unmapped()'s, leave no reference cycle: the message's elements are freed when its scope and items go, not by the collector."""
    import gc

    from adapters.kith.paths import message_scope

    every = path_compiler(PREFIXES)("//*")
    gc.collect()
    gc.disable()
    try:
        root = parse_xml(AWKWARD).getroot()
        scope = message_scope(root, PREFIXES)
        items = every.resolve(scope)
        assert all(item.location for item in items) and scope.child(group=items[-1].group).value_loc
        assert unmapped(root, set(), scope.results)
        del root, scope, items
        assert gc.collect() == 0
    finally:
        gc.enable()
