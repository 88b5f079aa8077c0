"""A generated block's locals and reads: its tags, its prologue, its field and value reads, library calls, type fits and puts.

The base of router/mapping/_codegen.py's `_Gen`: the conditions are written
in _codegen_conditions.py, the rules in _codegen_rules.py. Why a block is
written out at all, and from what, is said in _codegen.py.
"""

from __future__ import annotations

from typing import Any

from adapters.hl7v2.paths import ALL, SourcePath
from router.mapping._steps import reader
from router.mapping.runtime import Target


def _leaf_expr(part: str, sub: int) -> str:
    """An expression for Hl7Message.leaf's answer, given an expression *part* for the component's text."""
    if sub:
        part = f"(_u[{sub - 1}] if {sub} <= len(_u := {part}.split(SUB)) else '')"
    return f"(None if not (_t := {part}) or _t == NULL else (unescape(_t, delims) if ESC and ESC in _t else _t))"


class _BlockGen:
    """One block's generation: its locals carry a tag, so blocks written out inside it keep theirs apart.

    The root (tag "") is the generated function itself. A block written out in
    line (a datatype's `use:`, a nested `rules:`) is a child `_Gen` with a tag
    of its own: its locals, cached values and conditions are reset where its
    code starts, as a call would. Its scope, needed only to name a position in
    an error or to call a step that is not written out, is made on first use
    (`scope.at(value, path, index)`, as the closures make it up front).
    """

    def __init__(self, parent: _BlockGen | None = None, *, scope: str = "scope", value: str | None = None, same_value: bool = False) -> None:
        self.root: _BlockGen = parent.root if parent is not None else self
        self.depth: int = 0 if parent is None else parent.depth + 1
        self.tag = "" if parent is None else self.root._next_tag()
        self._tags = 0
        self.names: dict[str, Any] = {} if parent is None else self.root.names
        self.segments: dict[tuple[str | None, int, bool], str] = {} if parent is None else self.root.segments
        self.uses_message = False  # root only
        self.uses_value = False
        self.conditions: dict[str, str] = {}  # condition text -> local holding its answer in this block
        self.marked: set[str] = set()  # condition locals whose fields are marked read where they first hold
        self.negated = 0  # how many `not`s the condition being written is under
        self.self_marking: set[int] = set() if parent is None else self.root.self_marking  # ids of conditions called as they are: their yes marks their fields (conditions._memoised)
        self.guards: dict[str, int] = {} if parent is None else self.root.guards  # condition local -> how many rules it guards
        self.memos: list[str] = [] if parent is None else self.root.memos  # locals holding a field read when first asked (_memos)
        self.values: dict[tuple[Any, ...], str] = {}  # (segment var, field, rep, comp, sub) -> local holding the value, read when first asked
        self.relative: dict[tuple[Any, ...], str] = {}  # (V, None, 0, comp, sub) -> local holding a part of the value, read where the block starts
        self.scope = scope  # an expression for this block's scope
        self.value_src = value  # the expression holding a datatype child's value (None: scope.value, the root's)
        self.obj = "obj" if parent is None else self.n("o")
        self.lazy_scope = parent is not None and scope != parent.scope  # SC<tag> is made on first use
        self.vnames: tuple[str, str, str] = parent.vnames if same_value and parent is not None else (self.n("V"), self.n("VP"), self.n("NVP"))
        self.same_value = same_value
        self.parent = parent

    def _next_tag(self) -> str:
        self._tags += 1
        return f"_{self._tags}_"

    def n(self, base: str) -> str:
        """This block's name for local or global *base*."""
        return f"{base}{self.tag}"

    def message(self) -> None:
        self.root.uses_message = True

    def value(self) -> None:
        self.message()
        self.uses_value = True
        if self.same_value and self.parent is not None:
            self.parent.value()

    def prologue(self) -> list[str]:
        """The root function's first lines: what the body reads, found once."""
        head: list[str] = []
        if self.uses_message:
            head += ["msg = scope.message", "reads = scope.reads", "delims = msg.delims", "REP = delims.repetition", "COMP = delims.component", "SUB = delims.subcomponent", "ESC = delims.escape"]
        if self.uses_value:
            head += ["V = scope.value", "VP = V.split(COMP) if V else ()", "NVP = len(VP)"]
        if self.segments:
            # The current segment, else the group's (near_map), else the message's: what a path's _segments finds.
            head += ["_SG = scope.segments", "_GR = scope.group", "_NR = (_GR._near or near_map(_GR)) if _GR is not None else None", "_BY = scope.message.by_name"]
        for (name, k, current), var in self.segments.items():
            look = [
                f"_s = _NR.get({name!r}) if _NR is not None else None",
                "if _s is None:",
                f"    _s = _BY.get({name!r}, ())",
                f"{var} = _s[{k}] if {k} < len(_s) else None",
            ]
            if current:
                head += [f"{var} = _SG.get({name!r})", f"if {var} is None:", *("    " + x for x in look)]
            else:
                head += look
            head += [f"F{var} = {var}.fields if {var} is not None else ()", f"NF{var} = len(F{var})"]
        return head + self._resets()

    def _resets(self) -> list[str]:
        guards = self.root.guards
        out = [f"{var} = None" for var in self.conditions.values() if guards[var] > 1] + [f"{var} = _U" for var in self.values.values()]
        _, vp, nvp = self.vnames
        for (_, _, _, comp, sub), var in self.relative.items():
            out.append(f"{var} = {_leaf_expr(f'({vp}[{comp - 1}] if {comp} <= {nvp} else {chr(39) * 2})', sub)}")
        return out

    def child_start(self) -> list[str]:
        """A child's first lines, where its code starts: its value split, its caches reset, its object."""
        head: list[str] = []
        if self.uses_value and not self.same_value:
            v, vp, nvp = self.vnames
            head += [f"{v} = {self.value_src}", f"{vp} = {v}.split(COMP) if {v} else ()", f"{nvp} = len({vp})"]
        if self.lazy_scope:
            head.append(f"{self.n('SC')} = None")
        return head + self._resets() + [f"{self.obj} = {{}}"]

    def _value_expr(self, path: Any, *, mark: bool = True) -> str | None:
        """An expression for the one value *path* gives (str or None), or SEGMENT, or None when it cannot be written out.

        *mark*: the field is marked read when valued; a condition's is not (see `marks`).
        """
        if type(path) is not SourcePath or path.decode_whole:
            return None  # whole values read as text: the closures undo their escapes
        self.message()
        if path.segment is None:
            self.value()
            v = self.vnames[0]
            if not path.comp:
                return f"({v} if {v} and {v} != NULL else None)"
            key: tuple[Any, ...] = (v, None, 0, path.comp, path.sub)
            var = self.relative.get(key)
            if var is None:
                var = self.relative[key] = self.n(f"rv{len(self.relative)}")
            return var  # computed where the block starts (see child_start): reading a value's parts reads no field
        if path.rep == ALL:
            return None
        seg = self._segment_var(path)
        if seg is None:
            return None
        if path.field_no is None:
            return "SEGMENT"
        r = 0 if path.rep is None else path.rep - 1
        key = (seg, path.field_no, r, path.comp, path.sub, mark)
        var = self.values.get(key)
        if var is None:
            var = self.values[key] = self.n(f"fv{len(self.values)}")
            self.root.memos.append(var)
        # Read once per block, when first asked: several conditions of a block test one field (OBX-2).
        # What _field_value does, as one expression: the field, marked read when valued, then the leaf.
        f = path.field_no
        rep = "_w.split(REP, 1)[0]" if r == 0 else f"(_r[{r}] if {r} < len(_r := _w.split(REP)) else '')"
        if path.comp:
            leaf = _leaf_expr(f"(_p[{path.comp - 1}] if {path.comp} <= len(_p := {rep}.split(COMP)) else '')", path.sub)
        else:
            leaf = f"(None if not (_t := {rep}) or _t == NULL else _t)"
        read = f"(None if not (_w := (F{seg}[{f}] if {f} < NF{seg} else '')) else {f'(reads.add(({seg}.index, {f})) or {leaf})' if mark else leaf})"
        return f"({var} if {var} is not _U else ({var} := {read}))"

    def _call(self, i: int, fn: Any, args: str, where: str, out: str, arity: int, *, key: str = "FN") -> list[str]:
        """Lines calling library function *fn* on the list *args* into *out*; on a rejection, again with positions (as call_at)."""
        name = self.n(f"{key}{i}")
        self.names[name] = fn
        a = self.n("_a")
        return [
            f"{a} = {args}",
            "try:",
            f"    {out} = {name}.call(ctx.fn_ctx, _Values({a}, [{', '.join(['None'] * arity)}]))",
            "except MessageError:",
            f"    {out} = call_at({name}, ctx.fn_ctx, {a}, {self.scope}, {where})",
        ]

    def _fit(self, i: int, check: Any, var: str, path: str, index: str, *, typed: bool) -> list[str]:
        """Lines fitting *var* to its FHIR type as _steps.converter does: one match, `fit` only when it fails.

        *typed*: *var* is known to be text; else it may be None or a non-text result.
        """
        name = self.n(f"CK{i}")
        self.names[name] = check.pattern
        test = f"{name}.fullmatch({var}) is None"
        if check.printable_fits:  # as ValueCheck.fits: most codes are told by the quick test alone
            test = f"not ({var}.isprintable() and ' ' not in {var}) and {test}"
        if not typed:
            test = f"type({var}) is str and {test}"
        self.names[self.n(f"CKT{i}")] = check
        return [f"if {test}:", f"    {var} = fit({self.n(f'CKT{i}')}, {var}, {path}, {self.scope}, {index})"]

    def _put(self, i: int, put: Any, var: str, *, track: bool = False, known: str | None = None) -> list[str]:
        """Lines placing *var* as Target.put would; *track* records where a Ref went (ref rules).

        *known* is the value's type when the rule's shape fixes it ("str": a
        value read as it is; "dict": a datatype's object): then no list check.
        """
        shape = getattr(put, "plan", None)
        target = getattr(put, "__self__", None)
        obj = self.obj
        if track and isinstance(target, Target) and getattr(put, "__func__", None) is Target.put:
            shape = ("target", target.names, target.lists)
        elif track:
            shape = None
        if shape is not None and shape[0] == "untidy":  # _steps.untidy: mark the resource for pruning, then place
            _, always, inner = shape
            inner_lines = self._put(i, inner, var, known=known)
            if inner_lines and inner_lines[0].startswith(self.n(f"P{i}") + "("):
                shape = None  # the inner put is opaque: call the wrapper as it is
            elif always:
                return ["ctx.untidy = True", *inner_lines]
            elif known == "str":
                return inner_lines
            elif known == "dict":
                return ["ctx.untidy = True", *inner_lines]
            else:
                return [f"if type({var}) is dict or type({var}) is list:", "    ctx.untidy = True", *inner_lines]
        if shape is not None and shape[0] == "set":
            return [f"{obj}[{shape[1]!r}] = {var}"]
        if shape is None or shape[0] != "target":
            name = self.n(f"P{i}")
            self.names[name] = put
            return [f"{name}({obj}, {var}, ctx)"]
        names, lists = shape[1], shape[2]
        lines = [f"_n = {obj}"]
        for name, is_list in zip(names[:-1], lists[:-1]):
            if is_list:
                lines += [f"_l = _n.get({name!r})", "if _l is None:", f"    _l = _n[{name!r}] = [{{}}]", "elif not _l:", "    _l.append({})", "_n = _l[-1]"]
            else:  # an empty dict already there is kept: setdefault returns it
                lines += [f"_n = _n.get({name!r}) or _n.setdefault({name!r}, {{}})"]
        last = names[-1]
        if lists[-1]:
            lines += [f"_l = _n.get({last!r}) or _n.setdefault({last!r}, [])"]
            if track:  # a Ref value is never a list
                lines += [f"ctx.ref_sites.append((_l, len(_l), {var}, ctx.current))", f"_l.append({var})"]
            elif known is not None:
                lines += [f"_l.append({var})"]
            else:
                lines += [f"if type({var}) is list:", f"    _l.extend({var})", "else:", f"    _l.append({var})"]
        else:
            if track:
                lines.append(f"ctx.ref_sites.append((_n, {last!r}, {var}, ctx.current))")
            lines.append(f"_n[{last!r}] = {var}")
        if len(lines) == 3 and lines[1].startswith("_l = _n.get(") and lines[2] == f"_l.append({var})":  # one list at the top: one line
            lines = [lines[1].replace("_l = _n.", f"({obj}.").replace(" or _n.", f" or {obj}.") + f").append({var})"]
        return lines

    def _leaf(self, src: str, comp: int, sub: int, v: str, *, decode: bool = False) -> list[str]:
        """A line turning repetition text *src* into *v* (str or None), as Hl7Message.leaf does.

        With *decode*, a whole repetition is read as final text, escapes undone (SourcePath.decoded).
        """
        if not comp and decode:
            return [f"{v} = None if {src} == NULL else (unescape({src}, delims) if ESC and ESC in {src} else {src})"]
        if not comp:  # a whole repetition stays escaped: its components are split later
            return [f"{v} = {src} if {src} != NULL else None"]
        part = f"(_p[{comp - 1}] if {comp} <= len(_p := {src}.split(COMP)) else '')"
        return [f"{v} = {_leaf_expr(part, sub)}"]

    def _segment_var(self, path: SourcePath) -> str | None:
        if path.seg_rep == ALL or (path.seg_rep is not None and path.seg_rep < 1):
            return None
        if path.segment == "MSH" and (path.field_no or 0) <= 2:
            return None  # MSH-1 and MSH-2 are the delimiters themselves: never split
        key = (path.segment, 0 if path.seg_rep is None else path.seg_rep - 1, path.seg_rep is None)
        var = self.segments.get(key)
        if var is None:
            var = self.segments[key] = f"G{len(self.segments)}"
        return var

    def _reader(self, i: int, path: Any, j: int = 0) -> str:
        """An expression reading *path*'s first value (str or None) through its own reader, as _steps.first does."""
        name = self.n(f"R{i}_{j}")
        self.names[name] = reader(path)
        return f"{name}({self.scope})"

    def _open_field(self, seg: str, f: int, raw: str) -> list[str]:
        """Lines reading field *f* of the segment in local *seg* into *raw*, ending inside `if raw:`.

        The field is marked read only when it holds something: the reads feed
        the unmapped report, which lists valued fields only.
        """
        return [
            f"{raw} = F{seg}[{f}] if {f} < NF{seg} else ''",
            f"if {raw}:",
            f"    reads.add(({seg}.index, {f}))",
        ]
