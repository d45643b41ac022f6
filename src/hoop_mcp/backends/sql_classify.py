"""Classify one PostgreSQL statement with PostgreSQL's own parser (pglast / libpg_query).

The classification is what policy decides on: the most consequential effect found *anywhere* in
the statement tree (subqueries, CTEs, EXPLAIN ANALYZE, PREPARE bodies, function calls), the
relations read and written, the functions called and a set of risk flags. What cannot be known
(``DO``, ``CALL``, functions outside the allow-list, ``EXECUTE`` of a prepared statement) is
``unknown``, the most consequential effect of all. See ``docs/sql-classification.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError, scan
from pglast.stream import RawStream

from hoop_mcp.backends.sql_functions import dangerous_function, is_safe_function
from hoop_mcp.core.errors import InvalidInput
from hoop_mcp.core.models import FrozenModel


class SqlEffect(StrEnum):
    READ = "read"
    WRITE = "write"
    DDL = "ddl"
    DCL = "dcl"
    SESSION = "session"
    ADMIN = "admin"
    UNKNOWN = "unknown"


#: Larger is more consequential; a statement's effect is the maximum over its parts.
EFFECT_RANK: dict[SqlEffect, int] = {
    SqlEffect.READ: 0,
    SqlEffect.WRITE: 1,
    SqlEffect.DDL: 2,
    SqlEffect.DCL: 3,
    SqlEffect.SESSION: 4,
    SqlEffect.ADMIN: 5,
    SqlEffect.UNKNOWN: 6,
}


class SqlClassification(FrozenModel):
    """What one SQL statement does, as far as the parse tree tells."""

    command: str
    effect: SqlEffect
    effects: tuple[SqlEffect, ...]
    relations_read: tuple[str, ...]
    relations_written: tuple[str, ...]
    functions: tuple[str, ...]
    unknown_functions: tuple[str, ...]
    flags: tuple[str, ...]


#: Schemas whose relations are system catalogs (``system_catalog`` flag).
CATALOG_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})


def _invalid(rule_id: str, message: str, *, hint: str | None = None, **details: Any) -> InvalidInput:
    return InvalidInput(message, hint=hint, details={"rule_id": rule_id, **details})


def parse_statement(sql: str, *, max_bytes: int = 100_000) -> ast.RawStmt:
    """Validate ``sql`` and parse it into exactly one statement, or raise :class:`InvalidInput`."""
    try:
        size = len(sql.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise _invalid(
            "sql.invalid_text",
            "The SQL text contains characters that are not valid Unicode (lone surrogates).",
            hint="send plain UTF-8 text",
        ) from exc
    if "\x00" in sql:
        raise _invalid(
            "sql.nul_byte",
            "The SQL text contains a NUL byte (\\x00), which PostgreSQL does not accept in statements.",
            hint="remove the NUL byte",
        )
    if size > max_bytes:
        raise _invalid(
            "sql.too_large",
            f"The SQL text is {size} bytes; the limit is {max_bytes} bytes.",
            hint="send a shorter statement",
            size=size,
            max_bytes=max_bytes,
        )
    if not sql.strip():
        raise _invalid("sql.empty", "The SQL text is empty.", hint="send one SQL statement")
    try:
        stmts = parse_sql(sql)
    except ParseError as exc:
        text = str(exc.args[0]) if exc.args else str(exc)
        position = int(exc.args[1]) + 1 if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
        where = f" at character {position}" if position is not None else ""
        raise _invalid(
            "sql.parse_error",
            f"PostgreSQL could not parse the statement: {text}{where}.",
            hint="fix the SQL syntax and send it again",
            position=position,
        ) from exc
    except RecursionError as exc:
        raise _invalid(
            "sql.too_complex", "The SQL statement is nested too deeply to analyse.", hint="simplify it"
        ) from exc
    if not stmts:
        raise _invalid(
            "sql.empty",
            "The SQL text contains no statement (only comments, whitespace or semicolons).",
            hint="send one SQL statement",
        )
    if len(stmts) > 1:
        raise _invalid(
            "sql.stacked",
            f"The SQL text contains {len(stmts)} statements; send one statement per call.",
            hint="split the statements into separate calls",
            statements=len(stmts),
        )
    stmt = stmts[0]
    assert isinstance(stmt, ast.RawStmt)  # noqa: S101 - parse_sql always returns RawStmt nodes
    return stmt


def children(node: ast.Node) -> Iterator[tuple[str, ast.Node]]:
    """Every direct child node of ``node`` with the attribute it hangs from (tuples flattened)."""
    for name in getattr(type(node), "__slots__", ()):
        value = getattr(node, name, None)
        if isinstance(value, ast.Node):
            yield name, value
        elif isinstance(value, tuple):
            for item in _flatten(value):
                yield name, item


def _flatten(value: tuple[Any, ...]) -> Iterator[ast.Node]:
    for item in value:
        if isinstance(item, ast.Node):
            yield item
        elif isinstance(item, tuple):
            yield from _flatten(item)


def qualify_relation(rv: ast.RangeVar, default_schema: str) -> str:
    """``schema.name`` in lower case; unqualified ``pg_*`` names resolve to ``pg_catalog``."""
    name = (rv.relname or "").lower()
    schema = (rv.schemaname or "").lower()
    if not schema:
        schema = "pg_catalog" if name.startswith("pg_") else default_schema.lower()
    return f"{schema}.{name}"


def _qualify_parts(parts: tuple[str, ...], default_schema: str) -> str:
    names = [p.lower() for p in parts]
    if len(names) == 1:
        schema = "pg_catalog" if names[0].startswith("pg_") else default_schema.lower()
        return f"{schema}.{names[0]}"
    return f"{names[-2]}.{names[-1]}"


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return tuple(v.sval for v in value if isinstance(v, ast.String) and v.sval is not None)
    return ()


# ---------------------------------------------------------------------------------------------
# Statement tables

_DCL_STMTS = frozenset(
    {
        "GrantStmt",
        "GrantRoleStmt",
        "CreateRoleStmt",
        "AlterRoleStmt",
        "AlterRoleSetStmt",
        "DropRoleStmt",
        "AlterDefaultPrivilegesStmt",
        "ReassignOwnedStmt",
        "DropOwnedStmt",
    }
)
_MAINTENANCE_STMTS = frozenset({"VacuumStmt", "ClusterStmt", "ReindexStmt", "CheckPointStmt"})
_SERVER_CONFIG_STMTS = frozenset({"AlterSystemStmt", "LoadStmt"})
_NOTIFY_STMTS = frozenset({"NotifyStmt", "ListenStmt", "UnlistenStmt"})
_DDL_PREFIXES = ("Create", "Alter", "Drop", "Define", "Rename", "Comment", "Refresh", "SecLabel")
_DDL_STMTS = frozenset(
    {
        "CompositeTypeStmt",
        "ViewStmt",
        "IndexStmt",
        "RuleStmt",
        "ImportForeignSchemaStmt",
        "ReplicaIdentityStmt",
    }
)

#: Attributes that name the relation a DDL / maintenance statement changes (written).
_TARGET_SLOTS: dict[str, frozenset[str]] = {
    "CreateStmt": frozenset({"relation"}),
    "CreateForeignTableStmt": frozenset({"base"}),
    "IndexStmt": frozenset({"relation"}),
    "AlterTableStmt": frozenset({"relation"}),
    "ViewStmt": frozenset({"view"}),
    "RenameStmt": frozenset({"relation"}),
    "RefreshMatViewStmt": frozenset({"relation"}),
    "CreateTrigStmt": frozenset({"relation"}),
    "RuleStmt": frozenset({"relation"}),
    "CreatePolicyStmt": frozenset({"table"}),
    "AlterPolicyStmt": frozenset({"table"}),
    "CreateSeqStmt": frozenset({"sequence"}),
    "AlterSeqStmt": frozenset({"sequence"}),
    "AlterObjectSchemaStmt": frozenset({"relation"}),
    "AlterOwnerStmt": frozenset({"relation"}),
    "GrantStmt": frozenset({"objects"}),
    "TruncateStmt": frozenset({"relations"}),
    "InsertStmt": frozenset({"relation"}),
    "UpdateStmt": frozenset({"relation"}),
    "DeleteStmt": frozenset({"relation"}),
    "MergeStmt": frozenset({"relation"}),
    "CreateTableAsStmt": frozenset({"into"}),
    "SelectStmt": frozenset({"intoClause"}),
}

_RELATION_OBJECT_TYPES = frozenset(
    {
        enums.ObjectType.OBJECT_TABLE,
        enums.ObjectType.OBJECT_VIEW,
        enums.ObjectType.OBJECT_MATVIEW,
        enums.ObjectType.OBJECT_SEQUENCE,
        enums.ObjectType.OBJECT_INDEX,
        enums.ObjectType.OBJECT_FOREIGN_TABLE,
    }
)

_DML_STMTS = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})
_TRUE_WORDS = frozenset({"t", "true", "y", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"f", "false", "n", "no", "off", "0"})


def _command(stmt: ast.Node) -> str:
    """A human-readable command tag such as ``SELECT``, ``DROP TABLE`` or ``EXPLAIN ANALYZE``."""
    kind = type(stmt).__name__
    if isinstance(stmt, ast.SelectStmt):
        return "SELECT INTO" if stmt.intoClause is not None else "SELECT"
    if isinstance(stmt, ast.ExplainStmt):
        return "EXPLAIN ANALYZE" if _explain_analyze(stmt) else "EXPLAIN"
    if isinstance(stmt, ast.DropStmt) and stmt.removeType is not None:
        return "DROP " + _object_type_words(stmt.removeType)
    if isinstance(stmt, ast.CreateTableAsStmt):
        if stmt.objtype == enums.ObjectType.OBJECT_MATVIEW:
            return "CREATE MATERIALIZED VIEW"
        return "CREATE TABLE AS"
    if isinstance(stmt, ast.TransactionStmt):
        if stmt.kind is None:
            return "TRANSACTION"
        return {
            enums.TransactionStmtKind.TRANS_STMT_BEGIN: "BEGIN",
            enums.TransactionStmtKind.TRANS_STMT_START: "START TRANSACTION",
            enums.TransactionStmtKind.TRANS_STMT_COMMIT: "COMMIT",
            enums.TransactionStmtKind.TRANS_STMT_ROLLBACK: "ROLLBACK",
            enums.TransactionStmtKind.TRANS_STMT_SAVEPOINT: "SAVEPOINT",
            enums.TransactionStmtKind.TRANS_STMT_RELEASE: "RELEASE",
            enums.TransactionStmtKind.TRANS_STMT_ROLLBACK_TO: "ROLLBACK TO",
            enums.TransactionStmtKind.TRANS_STMT_PREPARE: "PREPARE TRANSACTION",
            enums.TransactionStmtKind.TRANS_STMT_COMMIT_PREPARED: "COMMIT PREPARED",
            enums.TransactionStmtKind.TRANS_STMT_ROLLBACK_PREPARED: "ROLLBACK PREPARED",
        }.get(stmt.kind, "TRANSACTION")
    if isinstance(stmt, ast.VariableSetStmt):
        if stmt.kind in (enums.VariableSetKind.VAR_RESET, enums.VariableSetKind.VAR_RESET_ALL):
            return "RESET"
        name = (stmt.name or "").lower()
        if name == "role":
            return "SET ROLE"
        if name == "session_authorization":
            return "SET SESSION AUTHORIZATION"
        if name == "transaction":
            return "SET TRANSACTION"
        return "SET"
    if isinstance(stmt, ast.VacuumStmt):
        return "VACUUM" if stmt.is_vacuumcmd else "ANALYZE"
    if isinstance(stmt, ast.VariableShowStmt):
        return "SHOW"
    special = {
        "CreateStmt": "CREATE TABLE",
        "CreatedbStmt": "CREATE DATABASE",
        "DropdbStmt": "DROP DATABASE",
        "CreateRoleStmt": "CREATE ROLE",
        "ViewStmt": "CREATE VIEW",
        "IndexStmt": "CREATE INDEX",
        "RuleStmt": "CREATE RULE",
        "CreateSeqStmt": "CREATE SEQUENCE",
        "AlterSeqStmt": "ALTER SEQUENCE",
        "CreateTrigStmt": "CREATE TRIGGER",
        "DefineStmt": "CREATE",
        "DoStmt": "DO",
        "CopyStmt": "COPY",
        "CheckPointStmt": "CHECKPOINT",
        "CommentStmt": "COMMENT",
        "RenameStmt": "ALTER (RENAME)",
        "GrantStmt": "GRANT" if getattr(stmt, "is_grant", True) else "REVOKE",
        "GrantRoleStmt": "GRANT" if getattr(stmt, "is_grant", True) else "REVOKE",
        "RefreshMatViewStmt": "REFRESH MATERIALIZED VIEW",
        "DeclareCursorStmt": "DECLARE CURSOR",
        "ClosePortalStmt": "CLOSE",
        "ConstraintsSetStmt": "SET CONSTRAINTS",
        "SecLabelStmt": "SECURITY LABEL",
        "PLAssignStmt": "ASSIGN",
        "CreateEventTrigStmt": "CREATE EVENT TRIGGER",
        "AlterEventTrigStmt": "ALTER EVENT TRIGGER",
        "CreatePLangStmt": "CREATE LANGUAGE",
        "CreateFdwStmt": "CREATE FOREIGN DATA WRAPPER",
        "AlterFdwStmt": "ALTER FOREIGN DATA WRAPPER",
        "CreateAmStmt": "CREATE ACCESS METHOD",
        "CreateStatsStmt": "CREATE STATISTICS",
        "AlterStatsStmt": "ALTER STATISTICS",
        "CreateOpClassStmt": "CREATE OPERATOR CLASS",
        "CreateOpFamilyStmt": "CREATE OPERATOR FAMILY",
        "AlterOpFamilyStmt": "ALTER OPERATOR FAMILY",
        "AlterTSConfigurationStmt": "ALTER TEXT SEARCH CONFIGURATION",
        "AlterTSDictionaryStmt": "ALTER TEXT SEARCH DICTIONARY",
        "AlterRoleSetStmt": "ALTER ROLE",
        "AlterDatabaseSetStmt": "ALTER DATABASE",
    }
    if kind in special:
        return special[kind]
    base = kind.removesuffix("Stmt")
    words: list[str] = []
    current = ""
    for ch in base:
        if ch.isupper() and current and not current[-1].isupper():
            words.append(current)
            current = ch
        else:
            current += ch
    if current:
        words.append(current)
    return " ".join(w.upper() for w in words) or kind.upper()


def _object_type_words(objtype: Any) -> str:
    try:
        name = enums.ObjectType(objtype).name
    except ValueError:
        return "OBJECT"
    return name.removeprefix("OBJECT_").replace("_", " ")


def _truthy_option(arg: ast.Node | None) -> bool:
    """Whether an option value such as ``ANALYZE`` / ``ANALYZE true`` / ``ANALYZE 0`` is on.

    Anything unrecognised counts as on (errs towards the more consequential reading).
    """
    if arg is None:
        return True
    if isinstance(arg, ast.Boolean):
        return bool(arg.boolval)
    if isinstance(arg, ast.Integer):
        return arg.ival != 0
    if isinstance(arg, ast.String):
        return (arg.sval or "").lower() not in _FALSE_WORDS
    if isinstance(arg, ast.A_Const) and arg.val is not None:
        return _truthy_option(arg.val)
    return True


def _explain_analyze(stmt: ast.ExplainStmt) -> bool:
    for opt in stmt.options or ():
        if isinstance(opt, ast.DefElem) and (opt.defname or "").lower() == "analyze":
            return _truthy_option(opt.arg) if isinstance(opt.arg, ast.Node) or opt.arg is None else True
    return False


# ---------------------------------------------------------------------------------------------
# Constant folding for unbounded writes


def _fold(expr: ast.Node | None) -> bool | None:
    """Fold a WHERE expression to True/False when it is constant (or a tautology); else None.

    ``None`` means "unknown / depends on the row". A tautology that is NULL for some rows
    (``col = col``) still folds to True: the point is to flag writes that touch every row.
    """
    if expr is None:
        return True
    if isinstance(expr, ast.A_Const):
        if expr.isnull:
            return False
        val = expr.val
        if isinstance(val, ast.Boolean):
            return bool(val.boolval)
        if isinstance(val, ast.String):
            word = (val.sval or "").strip().lower()
            if word in _TRUE_WORDS:
                return True
            if word in _FALSE_WORDS:
                return False
        return None
    if isinstance(expr, ast.TypeCast):
        arg = expr.arg
        if isinstance(arg, ast.A_Const) and isinstance(arg.val, ast.Integer):
            return arg.val.ival != 0  # 1::boolean
        return _fold(arg)
    if isinstance(expr, ast.BoolExpr):
        args = [a for a in expr.args or () if isinstance(a, ast.Node)]
        folded = [_fold(a) for a in args]
        if expr.boolop == enums.BoolExprType.NOT_EXPR:
            return None if folded[0] is None else not folded[0]
        if expr.boolop == enums.BoolExprType.AND_EXPR:
            if any(f is False for f in folded):
                return False
            return True if all(f is True for f in folded) else None
        # OR
        if any(f is True for f in folded) or _complementary(args):
            return True
        return False if all(f is False for f in folded) else None
    if isinstance(expr, ast.A_Expr):
        return _fold_a_expr(expr)
    if isinstance(expr, ast.NullTest):
        if isinstance(expr.arg, ast.A_Const):
            is_null = bool(expr.arg.isnull)
            wants_null = expr.nulltesttype == enums.NullTestType.IS_NULL
            return is_null == wants_null
        return None
    if isinstance(expr, ast.BooleanTest):
        inner = _fold(expr.arg)
        if inner is None:
            return None
        kind = enums.BoolTestType
        table = {
            kind.IS_TRUE: inner,
            kind.IS_NOT_FALSE: inner,
            kind.IS_FALSE: not inner,
            kind.IS_NOT_TRUE: not inner,
        }
        return table.get(expr.booltesttype) if expr.booltesttype is not None else None
    if isinstance(expr, ast.SubLink):
        sub = expr.subselect
        if (
            expr.subLinkType == enums.SubLinkType.EXISTS_SUBLINK
            and isinstance(sub, ast.SelectStmt)
            and not sub.fromClause
            and sub.whereClause is None
            and sub.op == enums.SetOperation.SETOP_NONE
        ):
            return True
        if (
            expr.subLinkType == enums.SubLinkType.EXPR_SUBLINK
            and isinstance(sub, ast.SelectStmt)
            and not sub.fromClause
            and sub.targetList
            and len(sub.targetList) == 1
            and isinstance(sub.targetList[0], ast.ResTarget)
        ):
            return _fold(sub.targetList[0].val)
        return None
    return None


def _complementary(args: list[ast.Node]) -> bool:
    """``x OR NOT x`` and ``x IS NULL OR x IS NOT NULL`` style tautologies."""
    for a in args:
        for b in args:
            if (
                isinstance(a, ast.BoolExpr)
                and a.boolop == enums.BoolExprType.NOT_EXPR
                and a.args
                and a.args[0] == b
            ):
                return True
            if (
                isinstance(a, ast.NullTest)
                and isinstance(b, ast.NullTest)
                and a.nulltesttype != b.nulltesttype
                and a.arg == b.arg
            ):
                return True
    return False


def _const_value(node: object) -> object:
    if isinstance(node, ast.TypeCast):
        return _const_value(node.arg)
    if isinstance(node, ast.A_Const) and not node.isnull and node.val is not None:
        val = node.val
        if isinstance(val, ast.Integer):
            return val.ival
        if isinstance(val, ast.Float):
            try:
                return float(val.fval or "")
            except ValueError:
                return None
        if isinstance(val, ast.String):
            return val.sval
        if isinstance(val, ast.Boolean):
            return bool(val.boolval)
    return None


def _compare(op: str, left: object, right: object) -> bool | None:
    if left is None or right is None:
        return None
    if isinstance(left, str) != isinstance(right, str):
        # '1' = 1 is resolved by PostgreSQL's unknown-literal coercion: compare as text.
        left, right = str(left), str(right)
    try:
        if op == "=":
            return bool(left == right)
        if op in ("<>", "!="):
            return bool(left != right)
        if op == "<":
            return bool(left < right)  # type: ignore[operator]
        if op == ">":
            return bool(left > right)  # type: ignore[operator]
        if op == "<=":
            return bool(left <= right)  # type: ignore[operator]
        if op == ">=":
            return bool(left >= right)  # type: ignore[operator]
    except TypeError:
        return None
    return None


def _fold_a_expr(expr: ast.A_Expr) -> bool | None:
    names = _strings(expr.name)
    op = names[-1] if names else ""
    kind = enums.A_Expr_Kind
    if expr.kind == kind.AEXPR_OP and expr.lexpr is not None and expr.rexpr is not None:
        if expr.lexpr == expr.rexpr:
            if op in ("=", "<=", ">=", "~~", "~~*"):
                return True
            if op in ("<>", "!=", "<", ">"):
                return False
        return _compare(op, _const_value(expr.lexpr), _const_value(expr.rexpr))
    if expr.kind == kind.AEXPR_NOT_DISTINCT and expr.lexpr == expr.rexpr:
        return True
    if expr.kind == kind.AEXPR_DISTINCT and expr.lexpr == expr.rexpr:
        return False
    if expr.kind == kind.AEXPR_LIKE and expr.lexpr is not None:
        pattern = _const_value(expr.rexpr)
        if isinstance(pattern, str) and pattern and set(pattern) == {"%"}:
            return True if op == "~~" else None
        return _compare("=", _const_value(expr.lexpr), pattern) if op == "~~" else None
    if expr.kind == kind.AEXPR_IN and isinstance(expr.rexpr, tuple):
        left = _const_value(expr.lexpr)
        if left is None:
            return True if any(item == expr.lexpr for item in expr.rexpr) and op == "=" else None
        values = [_const_value(item) for item in expr.rexpr]
        if any(v is None for v in values):
            return None
        hit = any(_compare("=", left, v) for v in values)
        return hit if op == "=" else not hit
    return None


# ---------------------------------------------------------------------------------------------
# The walker


@dataclass(frozen=True)
class _Ctx:
    ctes: frozenset[str] = frozenset()
    #: Inside plain EXPLAIN: statement effects become reads (nothing executes).
    plain_explain: bool = False
    #: RangeVars reached from here are written.
    target: bool = False
    #: Inside ALTER ROLE/DATABASE ... SET, CREATE FUNCTION ... SET: a stored setting, not a SET now.
    stored_setting: bool = False


class _Classifier:
    def __init__(self, default_schema: str) -> None:
        self.default_schema = default_schema
        self.effects: set[SqlEffect] = set()
        self.flags: set[str] = set()
        self.read: set[str] = set()
        self.written: set[str] = set()
        self.functions: set[str] = set()
        self.unknown_functions: set[str] = set()

    # -- recording -------------------------------------------------------------------------

    def stmt_effect(self, ctx: _Ctx, effect: SqlEffect, *flags: str) -> None:
        """An effect of the statement kind itself (a read under plain EXPLAIN: nothing executes)."""
        if ctx.plain_explain:
            self.effects.add(SqlEffect.READ)
            return
        self.effects.add(effect)
        self.flags.update(flags)

    def call_effect(self, effect: SqlEffect, *flags: str) -> None:
        """An effect of a function call: kept even under plain EXPLAIN (planning may fold calls)."""
        self.effects.add(effect)
        self.flags.update(flags)

    def relation(self, name: str, ctx: _Ctx) -> None:
        if ctx.target and not ctx.plain_explain:
            self.written.add(name)
        else:
            self.read.add(name)
            self.effects.add(SqlEffect.READ)
        if name.split(".", 1)[0] in CATALOG_SCHEMAS:
            self.flags.add("system_catalog")

    # -- traversal -------------------------------------------------------------------------

    def run(self, root: ast.Node) -> None:
        """Walk the whole tree with an explicit work list (no recursion: deep trees are fine)."""
        self.pending: list[tuple[ast.Node, _Ctx]] = [(root, _Ctx())]
        while self.pending:
            node, ctx = self.pending.pop()
            self.dispatch(node, ctx)

    def visit(self, node: ast.Node, ctx: _Ctx) -> None:
        """Schedule ``node``; results are sets, so the order of visits does not matter."""
        self.pending.append((node, ctx))

    def dispatch(self, node: ast.Node, ctx: _Ctx) -> None:
        handler = getattr(self, "visit_" + type(node).__name__, None)
        if handler is not None:
            handler(node, ctx)
            return
        kind = type(node).__name__
        if kind.endswith("Stmt"):
            self.statement(node, ctx)
            return
        self.generic(node, ctx)

    def generic(self, node: ast.Node, ctx: _Ctx, *, skip: frozenset[str] = frozenset()) -> None:
        targets = _TARGET_SLOTS.get(type(node).__name__, frozenset())
        for name, child in children(node):
            if name in skip:
                continue
            if name in targets:
                self.visit(child, replace(ctx, target=True))
            else:
                self.visit(child, replace(ctx, target=False) if ctx.target else ctx)

    def with_scope(self, with_clause: ast.WithClause | None, ctx: _Ctx) -> _Ctx:
        """Visit the CTEs with PostgreSQL's scoping and return the context for the main query."""
        if with_clause is None:
            return ctx
        ctes = [c for c in with_clause.ctes or () if isinstance(c, ast.CommonTableExpr)]
        all_names = frozenset(c.ctename or "" for c in ctes)
        seen: set[str] = set()
        for cte in ctes:
            # Without RECURSIVE a CTE sees only the CTEs before it (a same-named table is real).
            visible = all_names if with_clause.recursive else frozenset(seen)
            inner = replace(ctx, ctes=ctx.ctes | visible, target=False)
            query = cte.ctequery
            if type(query).__name__ in _DML_STMTS:
                self.stmt_effect(ctx, SqlEffect.WRITE, "data_modifying_cte")
            if isinstance(query, ast.Node):
                self.visit(query, inner)
            seen.add(cte.ctename or "")
        return replace(ctx, ctes=ctx.ctes | all_names)

    # -- node handlers ---------------------------------------------------------------------

    def visit_RawStmt(self, node: ast.RawStmt, ctx: _Ctx) -> None:
        if node.stmt is not None:
            self.visit(node.stmt, ctx)

    def visit_RangeVar(self, node: ast.RangeVar, ctx: _Ctx) -> None:
        if not node.schemaname and not node.catalogname and (node.relname or "") in ctx.ctes:
            return  # a CTE reference, not a relation
        self.relation(qualify_relation(node, self.default_schema), ctx)

    def visit_IntoClause(self, node: ast.IntoClause, ctx: _Ctx) -> None:
        if node.rel is not None:
            self.relation(qualify_relation(node.rel, self.default_schema), replace(ctx, target=True))
        self.generic(node, replace(ctx, target=False), skip=frozenset({"rel"}))

    def visit_FuncCall(self, node: ast.FuncCall, ctx: _Ctx) -> None:
        self.function(_strings(node.funcname))
        self.generic(node, ctx)

    def function(self, parts: tuple[str, ...]) -> None:
        if not parts:
            return
        display = ".".join(parts)
        self.functions.add(display)
        risk = dangerous_function(parts[-1])
        if risk is not None:
            self.call_effect(SqlEffect(risk.effect), risk.flag)
        elif not is_safe_function(parts):
            self.unknown_functions.add(display)
            self.call_effect(SqlEffect.UNKNOWN, "unknown_function")

    def visit_A_Expr(self, node: ast.A_Expr, ctx: _Ctx) -> None:
        names = _strings(node.name)
        if len(names) > 1 and names[0] != "pg_catalog":
            # OPERATOR(myschema.+) calls a user-defined operator function.
            display = f"OPERATOR({'.'.join(names)})"
            self.functions.add(display)
            self.unknown_functions.add(display)
            self.call_effect(SqlEffect.UNKNOWN, "unknown_function")
        self.generic(node, ctx)

    def visit_SelectStmt(self, node: ast.SelectStmt, ctx: _Ctx) -> None:
        self.stmt_effect(ctx, SqlEffect.READ)
        inner = self.with_scope(node.withClause, ctx)
        if node.intoClause is not None:
            self.stmt_effect(ctx, SqlEffect.DDL, "select_into")
        if node.lockingClause:
            self.stmt_effect(ctx, SqlEffect.WRITE, "row_lock")
        self.generic(node, inner, skip=frozenset({"withClause"}))

    def visit_InsertStmt(self, node: ast.InsertStmt, ctx: _Ctx) -> None:
        self.dml(node, ctx)

    def visit_UpdateStmt(self, node: ast.UpdateStmt, ctx: _Ctx) -> None:
        if _fold(node.whereClause) is True:
            self.stmt_effect(ctx, SqlEffect.WRITE, "unbounded_write")
        self.dml(node, ctx)

    def visit_DeleteStmt(self, node: ast.DeleteStmt, ctx: _Ctx) -> None:
        if _fold(node.whereClause) is True:
            self.stmt_effect(ctx, SqlEffect.WRITE, "unbounded_write")
        self.dml(node, ctx)

    def visit_MergeStmt(self, node: ast.MergeStmt, ctx: _Ctx) -> None:
        self.stmt_effect(ctx, SqlEffect.WRITE, "merge")
        self.dml(node, ctx)

    def dml(self, node: ast.Node, ctx: _Ctx) -> None:
        self.stmt_effect(ctx, SqlEffect.WRITE)
        returning = getattr(node, "returningClause", None) or getattr(node, "returningList", None)
        if returning:
            self.stmt_effect(ctx, SqlEffect.WRITE, "returning")
        inner = self.with_scope(getattr(node, "withClause", None), ctx)
        self.generic(node, inner, skip=frozenset({"withClause"}))

    def visit_TruncateStmt(self, node: ast.TruncateStmt, ctx: _Ctx) -> None:
        self.stmt_effect(ctx, SqlEffect.WRITE, "truncate")
        self.generic(node, ctx)

    def visit_ExplainStmt(self, node: ast.ExplainStmt, ctx: _Ctx) -> None:
        if _explain_analyze(node):
            self.stmt_effect(ctx, SqlEffect.READ, "explain_analyze")
            self.generic(node, ctx)
        else:
            self.generic(node, replace(ctx, plain_explain=True))

    def visit_CreateTableAsStmt(self, node: ast.CreateTableAsStmt, ctx: _Ctx) -> None:
        self.stmt_effect(ctx, SqlEffect.DDL, "create_table_as")
        self.generic(node, ctx)

    def visit_PrepareStmt(self, node: ast.PrepareStmt, ctx: _Ctx) -> None:
        # The body runs later through EXECUTE: its effects count now.
        self.stmt_effect(ctx, SqlEffect.SESSION, "prepare")
        self.generic(node, ctx)

    def visit_ExecuteStmt(self, node: ast.ExecuteStmt, ctx: _Ctx) -> None:
        self.stmt_effect(ctx, SqlEffect.SESSION, "execute")
        # The prepared statement's body is not visible (even EXPLAIN EXECUTE plans it).
        self.call_effect(SqlEffect.UNKNOWN)
        self.generic(node, ctx)

    def visit_DeallocateStmt(self, node: ast.DeallocateStmt, ctx: _Ctx) -> None:
        self.stmt_effect(ctx, SqlEffect.SESSION, "prepare")

    def visit_CopyStmt(self, node: ast.CopyStmt, ctx: _Ctx) -> None:
        self.stmt_effect(ctx, SqlEffect.ADMIN, "copy")
        if node.is_program:
            self.stmt_effect(ctx, SqlEffect.ADMIN, "copy_program")
        elif node.filename is not None:
            self.stmt_effect(ctx, SqlEffect.ADMIN, "server_files")
        if node.is_from:
            self.stmt_effect(ctx, SqlEffect.WRITE)
        for name, child in children(node):
            target = name == "relation" and bool(node.is_from)
            self.visit(child, replace(ctx, target=target))

    def visit_VariableSetStmt(self, node: ast.VariableSetStmt, ctx: _Ctx) -> None:
        name = (node.name or "").lower()
        flags: list[str] = []
        if name in ("role", "session_authorization") or node.kind == enums.VariableSetKind.VAR_RESET_ALL:
            flags.append("role_change")
        if name in (
            "transaction",
            "session characteristics",
            "transaction_read_only",
            "default_transaction_read_only",
            "transaction_isolation",
            "default_transaction_isolation",
            "transaction_deferrable",
            "default_transaction_deferrable",
            "transaction snapshot",
        ):
            flags.append("transaction_control")
        if ctx.stored_setting:
            self.flags.update(flags)
        else:
            self.stmt_effect(ctx, SqlEffect.SESSION, *flags)
        self.generic(node, ctx)

    def visit_VariableShowStmt(self, node: ast.VariableShowStmt, ctx: _Ctx) -> None:
        self.stmt_effect(ctx, SqlEffect.READ)

    def visit_DiscardStmt(self, node: ast.DiscardStmt, ctx: _Ctx) -> None:
        flags = ("role_change",) if node.target == enums.DiscardMode.DISCARD_ALL else ()
        self.stmt_effect(ctx, SqlEffect.SESSION, *flags)

    def visit_TransactionStmt(self, node: ast.TransactionStmt, ctx: _Ctx) -> None:
        self.stmt_effect(ctx, SqlEffect.SESSION, "transaction_control")

    def visit_ConstraintsSetStmt(self, node: ast.ConstraintsSetStmt, ctx: _Ctx) -> None:
        self.stmt_effect(ctx, SqlEffect.SESSION, "transaction_control")

    def visit_LockStmt(self, node: ast.LockStmt, ctx: _Ctx) -> None:
        self.stmt_effect(ctx, SqlEffect.SESSION, "lock")
        self.generic(node, ctx)

    def visit_DoStmt(self, node: ast.DoStmt, ctx: _Ctx) -> None:
        self.stmt_effect(ctx, SqlEffect.UNKNOWN, "procedural")

    def visit_CallStmt(self, node: ast.CallStmt, ctx: _Ctx) -> None:
        self.stmt_effect(ctx, SqlEffect.UNKNOWN, "procedural")
        self.generic(node, ctx, skip=frozenset({"funcexpr"}))

    def visit_DeclareCursorStmt(self, node: ast.DeclareCursorStmt, ctx: _Ctx) -> None:
        self.stmt_effect(ctx, SqlEffect.SESSION)
        self.generic(node, ctx)

    def visit_DropStmt(self, node: ast.DropStmt, ctx: _Ctx) -> None:
        self.stmt_effect(ctx, SqlEffect.DDL)
        if node.removeType in _RELATION_OBJECT_TYPES:
            for obj in node.objects or ():
                parts = _strings(obj)
                if parts:
                    self.relation(_qualify_parts(parts, self.default_schema), replace(ctx, target=True))
        self.generic(node, ctx)

    def visit_CommentStmt(self, node: ast.CommentStmt, ctx: _Ctx) -> None:
        self.stmt_effect(ctx, SqlEffect.DDL)
        parts = _strings(node.object)
        if node.objtype in _RELATION_OBJECT_TYPES and parts:
            self.relation(_qualify_parts(parts, self.default_schema), replace(ctx, target=True))
        elif node.objtype == enums.ObjectType.OBJECT_COLUMN and len(parts) >= 2:
            self.relation(_qualify_parts(parts[:-1], self.default_schema), replace(ctx, target=True))
        self.generic(node, ctx)

    def statement(self, node: ast.Node, ctx: _Ctx) -> None:
        kind = type(node).__name__
        if kind in _DCL_STMTS:
            self.stmt_effect(ctx, SqlEffect.DCL)
        elif kind in _MAINTENANCE_STMTS:
            self.stmt_effect(ctx, SqlEffect.ADMIN, "maintenance")
        elif kind in _SERVER_CONFIG_STMTS:
            self.stmt_effect(ctx, SqlEffect.ADMIN, "server_config")
        elif kind in _NOTIFY_STMTS:
            self.stmt_effect(ctx, SqlEffect.SESSION, "notify")
        elif kind in ("FetchStmt", "ClosePortalStmt"):
            self.stmt_effect(ctx, SqlEffect.SESSION)
        elif kind in _DDL_STMTS or kind.startswith(_DDL_PREFIXES):
            self.stmt_effect(ctx, SqlEffect.DDL)
        else:
            self.stmt_effect(ctx, SqlEffect.UNKNOWN)
        self.generic(node, replace(ctx, stored_setting=True))


_LITERAL_TOKENS = frozenset({"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST", "PARAM"})
_COMMENT_TOKENS = frozenset({"C_COMMENT", "SQL_COMMENT"})


def render_tokens(sql: str, mask: Callable[[str], str]) -> str:
    """The statement token by token (PostgreSQL's own scanner): comments dropped, one space between
    tokens, and only literal tokens passed through ``mask``. Cheap and faithful; used for records."""
    parts = []
    for token in scan(sql):
        if token.name in _COMMENT_TOKENS:
            continue
        text = sql[token.start : token.end + 1]
        parts.append(mask(text) if token.name in _LITERAL_TOKENS else text)
    return " ".join(parts)


def render_for_people(stmt: ast.RawStmt, mask: Callable[[str], str]) -> str | None:
    """The statement as a person should see it before confirming it, or ``None`` if it cannot be drawn.

    pglast re-renders the parse tree: comments are gone (nothing can hide inside one), precedence is
    made explicit with parentheses, and only literal values pass through ``mask`` (the detectors),
    so masking can never swallow SQL syntax. Mutates ``stmt``: call it after every analysis.
    """
    for node in _iter_consts(stmt):
        val = node.val
        if isinstance(val, ast.String):
            masked = mask(val.sval or "")
            if masked != val.sval:
                node.val = ast.String(sval=masked)
        elif isinstance(val, ast.Integer | ast.Float):
            text = str(val.ival if isinstance(val, ast.Integer) else val.fval)
            masked = mask(text)
            if masked != text:
                node.val = ast.String(sval=masked)
    try:
        return str(RawStream()(stmt))
    except Exception:  # noqa: BLE001 - the printer lacks a few rare nodes: no faithful rendering
        return None


def _iter_consts(root: ast.Node) -> Iterator[ast.A_Const]:
    stack: list[ast.Node] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.A_Const):
            yield node
        stack.extend(child for _, child in children(node))


def normalize_sql(sql: str) -> str:
    """``sql`` re-rendered by pglast (one canonical spelling; comments and spacing dropped).

    Not part of classification (deparsing costs more than classifying); used for display.
    """
    return _render(parse_statement(sql), sql)


def _render(stmt: ast.RawStmt, sql: str) -> str:
    try:
        return str(RawStream()(stmt))
    except Exception:  # noqa: BLE001 - the printer lacks support for a few rare nodes; fall back to the input
        return sql.strip().rstrip(";").strip()


def classify_statement(stmt: ast.RawStmt, sql: str, *, default_schema: str = "public") -> SqlClassification:
    """Classify an already parsed statement (see :func:`parse_statement`)."""
    walker = _Classifier(default_schema)
    try:
        walker.run(stmt)
    except RecursionError as exc:
        raise _invalid(
            "sql.too_complex", "The SQL statement is nested too deeply to analyse.", hint="simplify it"
        ) from exc
    inner = stmt.stmt if stmt.stmt is not None else stmt
    effects = tuple(sorted(walker.effects or {SqlEffect.READ}, key=EFFECT_RANK.__getitem__))
    return SqlClassification(
        command=_command(inner),
        effect=effects[-1],
        effects=effects,
        relations_read=tuple(sorted(walker.read)),
        relations_written=tuple(sorted(walker.written)),
        functions=tuple(sorted(walker.functions)),
        unknown_functions=tuple(sorted(walker.unknown_functions)),
        flags=tuple(sorted(walker.flags)),
    )


def classify_sql(sql: str, *, default_schema: str = "public", max_bytes: int = 100_000) -> SqlClassification:
    """Parse and classify exactly one PostgreSQL statement.

    Raises :class:`InvalidInput` (``details["rule_id"]`` one of ``sql.empty``, ``sql.nul_byte``,
    ``sql.too_large``, ``sql.invalid_text``, ``sql.parse_error``, ``sql.stacked``,
    ``sql.too_complex``) when the text cannot be classified.
    """
    stmt = parse_statement(sql, max_bytes=max_bytes)
    return classify_statement(stmt, sql, default_schema=default_schema)
