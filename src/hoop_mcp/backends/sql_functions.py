"""Function tables used by SQL classification.

Two tables, both documented in ``docs/sql-classification.md``:

* :data:`SAFE_FUNCTIONS` -- the allow-list: built-in functions that only compute a value from their
  arguments (or read harmless session facts) and that agents need for honest reads. A call is
  allow-listed only when it is unqualified or qualified with ``pg_catalog`` and its name matches an
  entry *exactly* (``"Lower"(x)`` is a different, user-defined function).
* :func:`dangerous_function` -- built-ins (and common extensions) with effects beyond reading:
  server files, large objects, dblink, signals, replication, advisory locks, configuration,
  sequences, transaction ids, dynamic SQL. Matched case-insensitively and **whatever the schema**,
  because extensions such as dblink are often installed in ``public``.

Any function on neither list is *unknown*: the classifier cannot see its body, so its effect is
``unknown`` and the call carries the ``unknown_function`` flag. Extending the allow-list from
configuration is a later feature; today this module is the single place to change.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class FunctionRisk(NamedTuple):
    """What calling a known-dangerous function does: an effect name and a flag."""

    effect: str
    flag: str


class _E(StrEnum):
    READ = "read"
    WRITE = "write"
    SESSION = "session"
    ADMIN = "admin"
    UNKNOWN = "unknown"


def _names(block: str) -> frozenset[str]:
    return frozenset(block.split())


#: Built-ins agents need for reads, grouped as in the PostgreSQL manual.
SAFE_FUNCTIONS: frozenset[str] = (
    # Aggregates (general and statistical) and ordered-set aggregates.
    _names("""
        count sum avg min max array_agg string_agg json_agg jsonb_agg json_agg_strict jsonb_agg_strict
        json_object_agg jsonb_object_agg json_object_agg_strict jsonb_object_agg_strict
        json_object_agg_unique jsonb_object_agg_unique json_object_agg_unique_strict
        jsonb_object_agg_unique_strict bool_and bool_or every bit_and bit_or bit_xor any_value
        stddev stddev_pop stddev_samp variance var_pop var_samp corr covar_pop covar_samp regr_avgx
        regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy mode
        percentile_cont percentile_disc range_agg range_intersect_agg xmlagg
    """)
    # Window functions.
    | _names("""
        row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
    """)
    # Strings and binary strings.
    | _names("""
        lower upper initcap length char_length character_length octet_length bit_length btrim ltrim rtrim
        substring substr left right lpad rpad replace reverse repeat split_part strpos position concat
        concat_ws format overlay translate regexp_replace regexp_match regexp_matches
        regexp_split_to_array regexp_split_to_table regexp_count regexp_instr regexp_like regexp_substr
        starts_with string_to_array string_to_table array_to_string md5 sha224 sha256 sha384 sha512
        encode decode ascii chr quote_ident quote_literal quote_nullable to_hex to_bin to_oct unistr
        normalize is_normalized casefold similar_to_escape like_escape convert_from convert_to
        get_byte get_bit bit_count crc32 crc32c text textlen
    """)
    # Numbers.
    | _names("""
        abs ceil ceiling floor round trunc sign sqrt cbrt exp ln log log10 power pow mod div pi degrees
        radians sin cos tan asin acos atan atan2 sind cosd tand asind acosd atand atan2d cot cotd sinh
        cosh tanh asinh acosh atanh random random_normal width_bucket gcd lcm factorial scale min_scale
        trim_scale erf erfc numeric int2 int4 int8 float4 float8 bool
    """)
    # Date and time.
    | _names("""
        now clock_timestamp statement_timestamp transaction_timestamp timeofday date_part date_trunc
        date_bin extract age make_date make_time make_timestamp make_timestamptz make_interval
        justify_days justify_hours justify_interval isfinite timezone date_add date_subtract date
        to_timestamp to_date to_char to_number
    """)
    # JSON and JSONB.
    | _names("""
        to_json to_jsonb row_to_json array_to_json json_build_array jsonb_build_array json_build_object
        jsonb_build_object json_object jsonb_object json_array_length jsonb_array_length json_each
        jsonb_each json_each_text jsonb_each_text json_extract_path jsonb_extract_path
        json_extract_path_text jsonb_extract_path_text json_object_keys jsonb_object_keys
        json_populate_record jsonb_populate_record json_populate_recordset jsonb_populate_recordset
        json_array_elements jsonb_array_elements json_array_elements_text jsonb_array_elements_text
        json_typeof jsonb_typeof json_to_record jsonb_to_record json_to_recordset jsonb_to_recordset
        json_strip_nulls jsonb_strip_nulls jsonb_set jsonb_set_lax jsonb_insert jsonb_pretty
        jsonb_path_exists jsonb_path_match jsonb_path_query jsonb_path_query_array
        jsonb_path_query_first jsonb_path_exists_tz jsonb_path_match_tz jsonb_path_query_tz
        jsonb_path_query_array_tz jsonb_path_query_first_tz json_scalar json_serialize
    """)
    # Arrays, ranges, set-returning helpers.
    | _names("""
        array_length array_lower array_upper array_dims array_ndims array_position array_positions
        array_append array_prepend array_cat array_remove array_replace array_fill cardinality unnest
        generate_series generate_subscripts trim_array array_sample array_shuffle array_reverse
        array_sort isempty lower_inc upper_inc lower_inf upper_inf range_merge int4range int8range
        numrange tsrange tstzrange daterange multirange
    """)
    # Conditionals written as calls, UUIDs, text search, network types, XML paths.
    | _names("""
        num_nulls num_nonnulls gen_random_uuid uuidv4 uuidv7 uuid_extract_timestamp uuid_extract_version
        to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery ts_rank ts_rank_cd
        ts_headline setweight strip numnode querytree tsvector_to_array array_to_tsvector
        host masklen network broadcast inet_merge family abbrev netmask hostmask set_masklen
        xpath xpath_exists xml_is_well_formed xml_is_well_formed_document xml_is_well_formed_content
    """)
    # Session facts and catalog helpers agents use to explore a schema (read-only).
    | _names("""
        version current_database current_schema current_schemas current_setting pg_backend_pid
        inet_client_addr inet_server_addr pg_postmaster_start_time pg_conf_load_time pg_is_in_recovery
        currval lastval txid_current_if_assigned pg_current_xact_id_if_assigned pg_typeof format_type
        has_table_privilege has_column_privilege has_any_column_privilege has_schema_privilege
        has_database_privilege has_function_privilege has_sequence_privilege pg_has_role
        pg_get_viewdef pg_get_indexdef pg_get_constraintdef pg_get_triggerdef pg_get_functiondef
        pg_get_function_arguments pg_get_function_result pg_get_function_identity_arguments pg_get_expr
        pg_get_userbyid pg_get_serial_sequence pg_get_keywords pg_table_is_visible pg_type_is_visible
        pg_function_is_visible obj_description col_description shobj_description pg_relation_size
        pg_total_relation_size pg_table_size pg_indexes_size pg_database_size pg_size_pretty
        pg_size_bytes pg_column_size pg_encoding_to_char pg_client_encoding pg_collation_for
        pg_input_is_valid pg_input_error_info to_regclass to_regtype to_regtypemod to_regproc
        to_regprocedure to_regnamespace to_regrole to_regoper to_regcollation
    """)
)


#: Exact (lower-case) names of dangerous functions.
_DANGEROUS_EXACT: dict[str, FunctionRisk] = {
    # Server files (adminpack's pg_file_* are matched by prefix below).
    "pg_read_file": FunctionRisk(_E.ADMIN, "server_files"),
    "pg_read_binary_file": FunctionRisk(_E.ADMIN, "server_files"),
    "pg_stat_file": FunctionRisk(_E.ADMIN, "server_files"),
    "pg_current_logfile": FunctionRisk(_E.ADMIN, "server_files"),
    "pg_logdir_ls": FunctionRisk(_E.ADMIN, "server_files"),
    # Large objects not covered by the lo_ prefix.
    "loread": FunctionRisk(_E.ADMIN, "large_objects"),
    "lowrite": FunctionRisk(_E.ADMIN, "large_objects"),
    # Signals and server control.
    "pg_terminate_backend": FunctionRisk(_E.ADMIN, "signals"),
    "pg_cancel_backend": FunctionRisk(_E.ADMIN, "signals"),
    "pg_reload_conf": FunctionRisk(_E.ADMIN, "signals"),
    "pg_rotate_logfile": FunctionRisk(_E.ADMIN, "signals"),
    "pg_rotate_logfile_old": FunctionRisk(_E.ADMIN, "signals"),
    "pg_log_backend_memory_contexts": FunctionRisk(_E.ADMIN, "signals"),
    # WAL, backups, promotion.
    "pg_switch_wal": FunctionRisk(_E.ADMIN, "replication"),
    "pg_switch_xlog": FunctionRisk(_E.ADMIN, "replication"),
    "pg_create_restore_point": FunctionRisk(_E.ADMIN, "replication"),
    "pg_promote": FunctionRisk(_E.ADMIN, "replication"),
    "pg_start_backup": FunctionRisk(_E.ADMIN, "replication"),
    "pg_stop_backup": FunctionRisk(_E.ADMIN, "replication"),
    "pg_wal_replay_pause": FunctionRisk(_E.ADMIN, "replication"),
    "pg_wal_replay_resume": FunctionRisk(_E.ADMIN, "replication"),
    "pg_export_snapshot": FunctionRisk(_E.SESSION, "transaction_control"),
    # Statistics resets.
    "pg_stat_statements_reset": FunctionRisk(_E.ADMIN, "maintenance"),
    # Configuration and notifications.
    "set_config": FunctionRisk(_E.SESSION, "set_config"),
    "pg_notify": FunctionRisk(_E.SESSION, "notify"),
    # Sequences and transaction ids (both write: they change state that survives a rollback or
    # assign a transaction id).
    "nextval": FunctionRisk(_E.WRITE, "sequence_write"),
    "setval": FunctionRisk(_E.WRITE, "sequence_write"),
    "txid_current": FunctionRisk(_E.WRITE, "xid_assign"),
    "pg_current_xact_id": FunctionRisk(_E.WRITE, "xid_assign"),
    # Functions that run a query given as a string: the classifier cannot see that query.
    "query_to_xml": FunctionRisk(_E.UNKNOWN, "dynamic_sql"),
    "query_to_xmlschema": FunctionRisk(_E.UNKNOWN, "dynamic_sql"),
    "query_to_xml_and_xmlschema": FunctionRisk(_E.UNKNOWN, "dynamic_sql"),
    "cursor_to_xml": FunctionRisk(_E.UNKNOWN, "dynamic_sql"),
    "cursor_to_xmlschema": FunctionRisk(_E.UNKNOWN, "dynamic_sql"),
    "ts_stat": FunctionRisk(_E.UNKNOWN, "dynamic_sql"),
    # Sleeping reads nothing and writes nothing but holds a connection (and locks) open.
    "pg_sleep": FunctionRisk(_E.READ, "sleep"),
    "pg_sleep_for": FunctionRisk(_E.READ, "sleep"),
    "pg_sleep_until": FunctionRisk(_E.READ, "sleep"),
}

#: Lower-case name prefixes of dangerous function families.
_DANGEROUS_PREFIX: tuple[tuple[str, FunctionRisk], ...] = (
    ("pg_read_", FunctionRisk(_E.ADMIN, "server_files")),
    ("pg_ls_", FunctionRisk(_E.ADMIN, "server_files")),
    ("pg_file_", FunctionRisk(_E.ADMIN, "server_files")),
    ("lo_", FunctionRisk(_E.ADMIN, "large_objects")),
    ("dblink", FunctionRisk(_E.ADMIN, "dblink")),
    ("pg_backup_", FunctionRisk(_E.ADMIN, "replication")),
    ("pg_logical_", FunctionRisk(_E.ADMIN, "replication")),
    ("pg_replication_", FunctionRisk(_E.ADMIN, "replication")),
    ("pg_stat_reset", FunctionRisk(_E.ADMIN, "maintenance")),
    ("pg_advisory_", FunctionRisk(_E.SESSION, "advisory_lock")),
    ("pg_try_advisory_", FunctionRisk(_E.SESSION, "advisory_lock")),
    ("table_to_xml", FunctionRisk(_E.UNKNOWN, "dynamic_sql")),
    ("schema_to_xml", FunctionRisk(_E.UNKNOWN, "dynamic_sql")),
    ("database_to_xml", FunctionRisk(_E.UNKNOWN, "dynamic_sql")),
)

#: Lower-case substrings of dangerous function families (replication slots and origins).
_DANGEROUS_INFIX: tuple[tuple[str, FunctionRisk], ...] = (
    ("replication_slot", FunctionRisk(_E.ADMIN, "replication")),
    ("replication_origin", FunctionRisk(_E.ADMIN, "replication")),
)


def dangerous_function(name: str) -> FunctionRisk | None:
    """The risk of calling ``name`` (without schema), or ``None`` if it is not a known-dangerous one.

    Matching ignores case and schema on purpose: it errs towards flagging.
    """
    key = name.lower()
    exact = _DANGEROUS_EXACT.get(key)
    if exact is not None:
        return exact
    for prefix, risk in _DANGEROUS_PREFIX:
        if key.startswith(prefix):
            return risk
    for infix, risk in _DANGEROUS_INFIX:
        if infix in key:
            return risk
    return None


def is_safe_function(parts: tuple[str, ...]) -> bool:
    """True when a call named by ``parts`` (``("lower",)`` or ``("pg_catalog", "lower")``) is allow-listed."""
    if len(parts) == 1:
        return parts[0] in SAFE_FUNCTIONS
    if len(parts) == 2:
        return parts[0] == "pg_catalog" and parts[1] in SAFE_FUNCTIONS
    return False
