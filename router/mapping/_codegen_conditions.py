"""Write a block's conditions out as Python expressions: the guards of its rules, their tests, and the marks of what made them hold.

A layer of router/mapping/_codegen.py's `_Gen`, over the reads in
_codegen_values.py; the rules that ask these conditions are in _codegen_rules.py.
"""

from __future__ import annotations

from typing import Any

from adapters.hl7v2.paths import ALL, SourcePath
from router.mapping._codegen_values import _BlockGen
from router.mapping.conditions import paths_of

_GUARD = "\x00"
"""Marks a guard line until the block is complete: `<indent>\x00<var>\x00<condition>`."""


class _ConditionGen(_BlockGen):
    """A block's generation, with its conditions: each written out once per block, its answer kept when asked again."""

    def _guard(self, i: int, when: Any) -> list[str]:
        """Lines opening `if <condition>:`, the answer kept for the rest of this block (as the memo would)."""
        text = getattr(when, "text", None)
        expr = self._cond(when) if getattr(when, "shape", None) is not None else None
        if expr is None or text is None:
            name = self.n(f"W{i}")
            self.names[name] = when
            return [f"if {name}({self.scope}):"]
        var = self.conditions.get(text)
        if var is None:
            var = self.conditions[text] = self.n(f"c{len(self.conditions)}")
        guards = self.root.guards
        guards[var] = guards.get(var, 0) + 1
        marks = [] if var in self.marked else self.marks(when)  # the first test of it in this block runs before the others
        self.marked.add(var)
        return [f"{_GUARD}{var}{_GUARD}{expr}", *("    " + x for x in marks)]  # written out by _guards once the block is complete

    def marks(self, pred: Any) -> list[str]:
        """Lines marking read what made *pred*, which holds, hold: as conditions.held does.

        All of an `and`, the first part that holds of an `or` (asked again: its reads are this
        block's cached locals), everything under a `not`. A field in a segment is marked in line
        when valued, as a rule's read marks it; any other path (XPath, `[*]`) is resolved by its
        own code, which marks what it reads.
        """
        kind = pred.shape[0]
        if kind == "and":
            return [line for part in pred.shape[1] for line in self.marks(part)]
        if kind == "or":
            lines: list[str] = []
            for k, part in enumerate(pred.shape[1]):
                lines += [f"{'el' if k else ''}if {self._cond(part)}:", *("    " + x for x in self.marks(part) or ["pass"])]
            return lines
        if id(pred) in self.self_marking:
            return []  # asked as it is, it marked what made it hold
        lines = []
        others = []
        for path in paths_of(pred):
            if type(path) is SourcePath and path.segment is None:
                continue  # a datatype's value: its parts are no field of their own
            seg = self._segment_var(path) if type(path) is SourcePath and path.rep != ALL and not path.decode_whole else None
            if seg is None:
                others.append(path)
            elif path.field_no is not None:
                f = path.field_no
                lines.append(f"if {f} < NF{seg} and F{seg}[{f}]: reads.add(({seg}.index, {f}))")
        if others:
            name = self.n(f"MK{len(self.names)}")
            self.names[name] = tuple(others)
            lines.append(f"mark_paths({name}, {self.scope})")  # as conditions._answer counts them
        return lines

    def _opaque(self, pred: Any) -> str:
        """A part of a condition called as its closure, what it reads not counted (the guard marks it where the condition holds).

        A whole memoised condition with no `or` and no `not` is called as it is, outside a `not`:
        its yes marks the fields that made it hold, kept from when it was first answered on this
        scope, where the guard would resolve its paths again (an XPath each, in KITH mappings).
        """
        name = self.n(f"T{len(self.names)}")
        self.names[name] = pred
        if getattr(pred, "marks_itself", False) and not self.negated:
            self.self_marking.add(id(pred))
            return f"{name}({self.scope})"
        return f"quiet({name}, {self.scope})"

    def _cond(self, pred: Any) -> str:
        shape = pred.shape
        kind = shape[0]
        if kind in ("and", "or"):
            return "(" + f" {kind} ".join(self._cond(p) for p in shape[1]) + ")"
        if kind == "not":
            self.negated += 1
            try:
                return f"(not {self._cond(shape[1])})"
            finally:
                self.negated -= 1
        _, op, path, arg = shape
        value = self._value_expr(path, mark=False)  # the guard marks it where the condition holds
        if value is None:
            return self._cond_values(pred, op, path, arg)
        if value == "SEGMENT":  # `PV1 valued`: is there such a segment here
            seg = self._segment_var(path)
            if op == "valued":
                return f"({seg} is not None)"
            if op == "not valued":
                return f"({seg} is None)"
            return self._opaque(pred)
        return self._test(op, arg, value, many=False)

    def _cond_values(self, pred: Any, op: str, path: Any, arg: Any) -> str:
        """A test on every value of a path not written out (XPath, `[*]`), as conditions.py's test does, its values read once per block."""
        values = getattr(path, "values", None)
        if values is None or type(path) is not SourcePath:
            # XPath conditions stay the memoised predicate: its answer is kept per scope, across
            # every block that asks it (Forsendelsesstatus in each template), which beats reading here.
            return self._opaque(pred)
        key = ("values", id(path))
        var = self.values.get(key)
        if var is None:
            var = self.values[key] = self.n(f"fv{len(self.values)}")
            self.root.memos.append(var)
            self.names[self.n(f"VL{var}")] = values
        vals = f"({var} if {var} is not _U else ({var} := quiet({self.n(f'VL{var}')}, {self.scope})))"
        return self._test(op, arg, vals, many=True)

    def _test(self, op: str, arg: Any, value: str, *, many: bool) -> str:
        """The expression for `<value> <op> <arg>`: *value* gives one value or None, or (*many*) a list of values."""
        if op == "valued":
            return f"bool({value})" if many else f"({value} is not None)"
        if op == "not valued":
            return f"(not {value})" if many else f"({value} is None)"
        if op in ("=", "!="):
            if many:
                return f"({arg!r} {'in' if op == '=' else 'not in'} {value})"
            return f"({value} {'==' if op == '=' else '!='} {arg!r})"
        name = self.n(f"X{len(self.names)}")
        self.names[name] = arg
        if op == "in":
            return f"(not {name}.isdisjoint({value}))" if many else f"({value} in {name})"
        if many:  # matches (values are never None)
            return f"((_vl := {value}) is not None and any({name}.search(_v) for _v in _vl))"
        return f"((_t := {value}) is not None and {name}.search(_t) is not None)"  # matches
