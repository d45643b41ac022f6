"""Find uses of masked columns that result-set masking cannot cover.

Masking rewrites values in the result set, using the protocol's column metadata (table OID and
attribute number) to know which output columns are masked. That works for a masked column selected
*as is* in the outermost target list, and for a top-level ``*``. It cannot work when a masked value
is turned into something else first (``upper(ssn)``, ``ssn || ''``, ``to_jsonb(c)``), when it is
renamed inside a subquery, or when it only steers which rows come back (``WHERE ssn LIKE '9%'`` is
a comparison oracle). This module finds those uses so the server can refuse them.

The analysis is name-based and conservative (PostgreSQL's scope resolution is not reproduced): once
a statement reads a masked relation, every column reference whose last name is a masked column of
that relation counts, whichever table it actually belongs to. See ``docs/sql-classification.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pglast import ast, enums

from hoop_mcp.backends.sql_classify import (
    SqlClassification,
    children,
    classify_statement,
    parse_statement,
    qualify_relation,
)
from hoop_mcp.core.errors import InvalidInput
from hoop_mcp.core.models import FrozenModel


class MaskedColumnUse(FrozenModel):
    """One place where a masked column's value could escape masking."""

    column: str
    clause: str
    message: str


#: Clauses where a use only filters, groups or orders rows (comparison oracles). Allowed when the
#: caller passes ``allow_predicates=True``; every other clause is always refused.
PREDICATE_CLAUSES = frozenset({"where", "join", "order_by", "group_by", "having", "distinct", "positional"})

_MESSAGES = {
    "where": "is used in a WHERE condition; comparisons on a masked column reveal its value",
    "join": "is used in a join condition; joining on a masked column reveals its value",
    "order_by": "is used in ORDER BY; sorting by a masked column reveals its value",
    "group_by": "is used in GROUP BY; grouping by a masked column reveals its value",
    "having": "is used in HAVING; conditions on a masked column reveal its value",
    "distinct": "is used in DISTINCT or DISTINCT ON; de-duplicating reveals which values are equal "
    "(and the sort behind it, their order)",
    "positional": "may be referenced by position in ORDER BY / GROUP BY; refer to unmasked columns by name",
    "expression": "is used inside an expression or function call; the derived value cannot be masked. "
    "Select the column on its own",
    "subquery": "is used inside a subquery, CTE, UNION arm or copied elsewhere; masking cannot follow it "
    "there. Select it directly in the outermost SELECT",
    "renamed": "is renamed by a column alias list (e.g. customers AS c(a, b, ...)); masking follows column "
    "names, so columns of a table with masked columns cannot be renamed in FROM. Use AS on the output instead",
    "whole_row": "is included in a whole-row reference (e.g. row_to_json(c), c inside a function or "
    "subquery); list the columns you need instead",
}


@dataclass
class _State:
    #: masked column name -> relations (``schema.table``) in play that mask it
    columns: dict[str, set[str]]
    #: names (relation names and aliases) that denote an in-play masked relation -> its qualified name
    row_names: dict[str, str]
    #: in-play masked relations and the schema for unqualified names
    in_play: set[str]
    default_schema: str
    #: output aliases of masked columns in the outermost target list
    aliases: dict[str, set[str]] = field(default_factory=dict)
    uses: set[tuple[str, str]] = field(default_factory=set)

    def add(self, relations: Iterable[str], column: str, clause: str) -> None:
        for rel in relations:
            self.uses.add((f"{rel}.{column}", clause))


def _normalize_masked(masked: Mapping[str, frozenset[str]], default_schema: str) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for rel, cols in masked.items():
        key = rel.lower() if "." in rel else f"{default_schema.lower()}.{rel.lower()}"
        out[key] = out.get(key, frozenset()) | frozenset(cols)
    return out


def _iter_nodes(node: ast.Node) -> Iterable[ast.Node]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(child for _, child in children(current))


class _Scanner:
    def __init__(self, state: _State) -> None:
        self.s = state

    # -- column references ----------------------------------------------------------------

    def column_ref(self, node: ast.ColumnRef, clause: str) -> None:
        fields = tuple(node.fields or ())
        if not fields:
            return
        last = fields[-1]
        if isinstance(last, ast.A_Star):
            prefix = [f.sval for f in fields[:-1] if isinstance(f, ast.String) and f.sval]
            if not prefix:
                self.whole_row(self.s.row_names.values())
            else:
                rel = self._row_relation(prefix)
                if rel is not None:
                    self.whole_row([rel])
            return
        if not isinstance(last, ast.String):
            return
        name = last.sval or ""
        if len(fields) == 1 and name in self.s.row_names:
            self.whole_row([self.s.row_names[name]])
        if name in self.s.columns:
            self.s.add(self._relations_for(fields, name), name, clause)
        elif len(fields) == 1 and name in self.s.aliases:
            for column in self.s.aliases[name]:
                self.s.add(self.s.columns.get(column, set()), column, clause)

    def _row_relation(self, prefix: list[str]) -> str | None:
        if prefix[-1] in self.s.row_names:
            return self.s.row_names[prefix[-1]]
        qualified = ".".join(prefix[-2:]).lower()
        return qualified if qualified in set(self.s.row_names.values()) else None

    def _relations_for(self, fields: tuple[ast.Node, ...], column: str) -> set[str]:
        candidates = self.s.columns[column]
        if len(fields) >= 2 and isinstance(fields[-2], ast.String):
            rel = self.s.row_names.get(fields[-2].sval or "")
            if rel is not None and rel in candidates:
                return {rel}
        return candidates

    def whole_row(self, relations: Iterable[str]) -> None:
        for rel in set(relations):
            for column, rels in self.s.columns.items():
                if rel in rels:
                    self.s.uses.add((f"{rel}.{column}", "whole_row"))

    def plain_masked(self, node: ast.Node | None) -> str | None:
        """The masked column name when ``node`` is a bare (optionally qualified) reference to one."""
        if not isinstance(node, ast.ColumnRef):
            return None
        fields = tuple(node.fields or ())
        if not fields or not all(isinstance(f, ast.String) for f in fields):
            return None
        name = fields[-1].sval or ""
        if len(fields) == 1 and name in self.s.row_names:
            return None  # a whole-row reference, not a column
        return name if name in self.s.columns else None

    # -- generic scan ---------------------------------------------------------------------

    def scan(self, node: ast.Node | None, clause: str) -> None:
        """Every use below ``node`` counts as ``clause``; nested SELECTs count as ``subquery``."""
        if node is None:
            return
        if isinstance(node, ast.ColumnRef):
            self.column_ref(node, clause)
            return
        if isinstance(node, ast.SubLink):
            self.scan(node.testexpr, clause)
            exists = node.subLinkType == enums.SubLinkType.EXISTS_SUBLINK
            if isinstance(node.subselect, ast.SelectStmt):
                self.nested_select(node.subselect, ignore_targets=exists)
            return
        if isinstance(node, ast.SelectStmt):
            self.nested_select(node)
            return
        if isinstance(node, ast.JoinExpr):
            self.join(node, "subquery" if clause == "subquery" else "join")
            return
        if isinstance(node, ast.RangeSubselect):
            self.scan(node.subquery, "subquery")
            return
        if isinstance(node, ast.RangeVar):
            return
        for _, child in children(node):
            self.scan(child, clause)

    def join(self, node: ast.JoinExpr, clause: str) -> None:
        sides = [side for side in (node.larg, node.rarg) if isinstance(side, ast.Node)]
        if clause == "subquery":
            for side in sides:
                self.scan(side, "subquery")
        else:
            self.from_clause(sides)
        self.scan(node.quals, clause)
        for item in node.usingClause or ():
            if isinstance(item, ast.String) and item.sval in self.s.columns:
                self.s.add(self.s.columns[item.sval], item.sval, clause)
        if node.isNatural:
            for column, rels in self.s.columns.items():
                self.s.add(rels, column, clause)

    def nested_select(self, node: ast.SelectStmt, *, ignore_targets: bool = False) -> None:
        """Anything inside a nested SELECT is a ``subquery`` use (names can be rebound there)."""
        for name, child in children(node):
            if ignore_targets and name == "targetList":
                continue
            self.scan(child, "subquery")

    def from_clause(self, items: Iterable[ast.Node]) -> None:
        for item in items:
            if isinstance(item, ast.JoinExpr):
                self.join(item, "join")
            elif isinstance(item, ast.RangeSubselect):
                self.scan(item.subquery, "subquery")
            elif isinstance(item, ast.RangeVar):
                continue
            else:
                self.scan(item, "expression")

    # -- statements -----------------------------------------------------------------------

    def target_list(self, targets: Iterable[ast.Node], *, record_aliases: bool) -> list[ast.Node | None]:
        """Outermost target-list rules: a bare masked column (or ``*`` / ``c.*``) is fine."""
        vals: list[ast.Node | None] = []
        for target in targets:
            val = target.val if isinstance(target, ast.ResTarget) else target
            vals.append(val)
            column = self.plain_masked(val)
            if column is not None:
                if record_aliases and isinstance(target, ast.ResTarget) and target.name:
                    self.s.aliases.setdefault(target.name, set()).add(column)
                continue
            if isinstance(val, ast.ColumnRef) and val.fields and isinstance(val.fields[-1], ast.A_Star):
                continue  # top-level * / c.*: the protocol's column metadata masks these
            self.scan(val, "expression")
        return vals

    def positional(self, items: Iterable[ast.Node], targets: list[ast.Node | None], has_star: bool) -> None:
        for item in items:
            node = item.node if isinstance(item, ast.SortBy) else item
            if not (isinstance(node, ast.A_Const) and isinstance(node.val, ast.Integer)):
                continue
            index = (node.val.ival or 0) - 1
            target = targets[index] if 0 <= index < len(targets) else None
            column = self.plain_masked(target)
            if column is not None:
                self.s.add(self.s.columns[column], column, "positional")
            elif has_star:
                for name, rels in self.s.columns.items():
                    self.s.add(rels, name, "positional")

    def top_select(self, node: ast.SelectStmt) -> None:
        if node.op != enums.SetOperation.SETOP_NONE or node.intoClause is not None:
            # UNION arms and SELECT INTO copies: masking cannot follow the values.
            self.nested_select(node)
            return
        if node.withClause is not None:
            self.scan(node.withClause, "subquery")
        targets = self.target_list(node.targetList or (), record_aliases=True)
        has_star = any(
            isinstance(t, ast.ColumnRef) and t.fields and isinstance(t.fields[-1], ast.A_Star)
            for t in targets
        )
        self.from_clause(node.fromClause or ())
        self.scan(node.whereClause, "where")
        self.positional(node.groupClause or (), targets, has_star)
        self.positional(node.sortClause or (), targets, has_star)
        self.scan_list(node.groupClause, "group_by")
        self.scan(node.havingClause, "having")
        self.scan_list(node.sortClause, "order_by")
        self.scan_list(node.distinctClause, "distinct")
        if node.distinctClause and None in node.distinctClause:
            # Plain DISTINCT over a masked column de-duplicates (and usually sorts) by its value.
            for target in targets:
                column = self.plain_masked(target)
                if column is not None and isinstance(target, ast.ColumnRef):
                    self.s.add(self._relations_for(tuple(target.fields or ()), column), column, "distinct")
            if has_star:
                for column, rels in self.s.columns.items():
                    self.s.add(rels, column, "distinct")
        for window in node.windowClause or ():
            if isinstance(window, ast.WindowDef):
                self.scan_list(window.partitionClause, "group_by")
                self.scan_list(window.orderClause, "order_by")
        self.scan(node.limitCount, "expression")
        self.scan(node.limitOffset, "expression")
        self.scan_list(node.valuesLists, "expression")

    def scan_list(self, items: Iterable[ast.Node] | None, clause: str) -> None:
        for item in items or ():
            if isinstance(item, ast.Node):
                self.scan(item, clause)

    def returning(self, node: ast.Node) -> None:
        clause = getattr(node, "returningClause", None)
        exprs = getattr(clause, "exprs", None) if clause is not None else getattr(node, "returningList", None)
        self.target_list(exprs or (), record_aliases=False)

    def statement(self, node: ast.Node) -> None:
        if isinstance(node, ast.SelectStmt):
            self.top_select(node)
        elif isinstance(node, ast.UpdateStmt | ast.DeleteStmt):
            if node.withClause is not None:
                self.scan(node.withClause, "subquery")
            if isinstance(node, ast.UpdateStmt):
                self.scan_list(node.targetList, "expression")
                self.from_clause(node.fromClause or ())
            else:
                self.from_clause(node.usingClause or ())
            self.scan(node.whereClause, "where")
            self.returning(node)
        elif isinstance(node, ast.InsertStmt):
            if node.withClause is not None:
                self.scan(node.withClause, "subquery")
            if isinstance(node.selectStmt, ast.SelectStmt):
                self.nested_select(node.selectStmt)
            self.scan(node.onConflictClause, "expression")
            self.returning(node)
        elif isinstance(node, ast.MergeStmt):
            if node.withClause is not None:
                self.scan(node.withClause, "subquery")
            self.from_clause([node.sourceRelation] if node.sourceRelation is not None else [])
            self.scan(node.joinCondition, "join")
            self.scan_list(node.mergeWhenClauses, "expression")
            self.returning(node)
        elif isinstance(node, ast.ExplainStmt | ast.PrepareStmt | ast.DeclareCursorStmt):
            inner = node.query
            if isinstance(inner, ast.Node):
                self.statement(inner)
        elif isinstance(node, ast.CopyStmt):
            if node.query is not None:
                self.scan(node.query, "subquery")
            elif node.relation is not None:
                rel = qualify_relation(node.relation, self.s.default_schema)
                if rel in self.s.in_play and not node.is_from:
                    self.whole_row([rel])
        else:
            # CREATE TABLE AS, CREATE VIEW, ... : values are copied where masking cannot follow.
            for _, child in children(node):
                self.scan(child, "subquery" if isinstance(child, ast.SelectStmt) else "expression")


def find_masked_column_uses(
    sql: str,
    masked: Mapping[str, frozenset[str]],
    *,
    allow_predicates: bool = False,
    default_schema: str = "public",
    parsed: tuple[ast.RawStmt, SqlClassification] | None = None,
) -> tuple[MaskedColumnUse, ...]:
    """Uses of masked columns in ``sql`` that masking the result set cannot cover.

    ``masked`` maps ``schema.table`` to its masked column names. With ``allow_predicates`` the
    predicate-type uses (WHERE, JOIN, ORDER BY, GROUP BY, HAVING, DISTINCT ON, positional) are
    not reported; expression, subquery and whole-row uses always are. Raises
    :class:`~hoop_mcp.core.errors.InvalidInput` like :func:`classify_sql` for text that is not one
    valid statement. ``parsed`` passes in what :func:`parse_statement` and
    :func:`classify_statement` already produced for ``sql`` (so the caller parses once).
    """
    masked_map = _normalize_masked(masked, default_schema)
    if not any(masked_map.values()):
        return ()
    if parsed is None:
        stmt = parse_statement(sql)
        classification = classify_statement(stmt, sql, default_schema=default_schema)
    else:
        stmt, classification = parsed
    in_play = (set(classification.relations_read) | set(classification.relations_written)) & set(masked_map)
    if not in_play:
        return ()
    columns: dict[str, set[str]] = {}
    for rel in in_play:
        for column in masked_map[rel]:
            columns.setdefault(column, set()).add(rel)
    row_names: dict[str, str] = {}
    renamed: set[str] = set()
    for node in _iter_nodes(stmt):
        if isinstance(node, ast.RangeVar):
            rel = qualify_relation(node, default_schema)
            if rel in in_play:
                row_names[node.relname or ""] = rel
                if node.alias is not None and node.alias.aliasname:
                    row_names[node.alias.aliasname] = rel
                if node.alias is not None and node.alias.colnames:
                    renamed.add(rel)
        elif isinstance(node, ast.JoinExpr) and node.alias is not None and node.alias.colnames:
            # (a JOIN b) AS j(x, y, ...) renames every column of the join, masked ones included.
            renamed.update(
                qualify_relation(n, default_schema) for n in _iter_nodes(node) if isinstance(n, ast.RangeVar)
            )
    state = _State(columns=columns, row_names=row_names, in_play=in_play, default_schema=default_schema)
    for rel in renamed & in_play:
        for column in masked_map[rel]:
            state.add([rel], column, "renamed")
    if stmt.stmt is not None:
        try:
            _Scanner(state).statement(stmt.stmt)
        except RecursionError as exc:
            raise InvalidInput(
                "The SQL statement is nested too deeply to check for uses of masked columns.",
                hint="simplify it",
                details={"rule_id": "sql.too_complex"},
            ) from exc
    uses = sorted(state.uses, key=lambda u: (u[1], u[0]))
    return tuple(
        MaskedColumnUse(column=column, clause=clause, message=f"Masked column {column} {_MESSAGES[clause]}.")
        for column, clause in uses
        if allow_predicates is False or clause not in PREDICATE_CLAUSES
    )
