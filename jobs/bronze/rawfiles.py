"""Raw files (contracts §1, §2): their key layout, and reading them in Spark tasks with pyarrow."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession

from flowlake.contracts import (
    INSTANCE_ID_PATTERN, IP_EVENT_DDL, IP_EVENT_SCHEMA, IP_EVENTS_PREFIX, RAW_FLOW_DDL, RAW_FLOW_SCHEMA,
    RAW_FLOWS_PREFIX, SCHEMA_VERSION, SCHEMA_VERSION_KEY,
)
from flowlake.jobs.silver.ips import canonical_or_none
from flowlake.lake import ddl_columns
from flowlake.storage import Location, resolve

KIND_FLOWS = "flows"
KIND_EVENTS = "ip_events"
RAW_KEY_RE = re.compile(
    rf"^flows/v1/dt=(\d{{4}}-\d{{2}}-\d{{2}})/hr=([01]\d|2[0-3])/instance=(?P<instance>{INSTANCE_ID_PATTERN})/"
    rf"\d+-\d+\.parquet$"
)
EVENT_KEY_RE = re.compile(r"^ip_events/v1/dt=\d{4}-\d{2}-\d{2}/[A-Za-z0-9][A-Za-z0-9._=-]*\.(parquet|jsonl\.gz)$")
FILES_PER_TASK = 64
# rows per Arrow batch handed to Spark: a small file's few hundred rows each cost the JVM a batch's
# fixed overhead, so a task's files are handed over together
BATCH_ROWS = 1 << 16


def list_files(loc: Location, prefixes: Iterable[str]) -> list[str]:
    """Relative keys of all files under the given prefixes of a root (missing prefixes are empty)."""
    keys: list[str] = []
    for prefix in prefixes:
        base = f"{loc.path}/{prefix}"
        infos = loc.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        keys += [i.path[len(loc.path) + 1:] for i in infos if i.type == pafs.FileType.File]
    return sorted(keys)


def key_reason(key: str, *, kind: str) -> str | None:
    """Why an object key breaks the contract's layout (or tries to leave the prefix), or None."""
    key_re = RAW_KEY_RE if kind == KIND_FLOWS else EVENT_KEY_RE
    if ".." in key.split("/") or "\\" in key or not key_re.match(key):
        prefix = RAW_FLOWS_PREFIX if kind == KIND_FLOWS else IP_EVENTS_PREFIX
        return f"key does not follow the contract layout ({prefix}/dt=YYYY-MM-DD/...)"
    return None


def read_contract_file(loc: Location, key: str, *, kind: str) -> tuple[pa.Table | None, str | None]:
    """Read one raw file into the contract's Arrow schema: (table, None) or (None, reason)."""
    reason = key_reason(key, kind=kind)
    if reason:
        return None, reason
    schema = RAW_FLOW_SCHEMA if kind == KIND_FLOWS else IP_EVENT_SCHEMA
    path = f"{loc.path}/{key}"
    try:
        if key.endswith(".parquet"):
            with loc.fs.open_input_file(path) as f:
                pf = pq.ParquetFile(f)
                if kind == KIND_FLOWS:
                    version = (pf.metadata.metadata or {}).get(SCHEMA_VERSION_KEY)
                    if version != SCHEMA_VERSION.encode():
                        shown = version.decode(errors="replace") if version else "missing"
                        return None, f"schema version {shown} (expected {SCHEMA_VERSION} in {SCHEMA_VERSION_KEY.decode()})"
                table = pf.read()
        else:
            with loc.fs.open_input_stream(path, compression="gzip") as stream:
                data = stream.read()
            if not data.strip():
                return pa.Table.from_pylist([], schema=schema), None
            table = pajson.read_json(pa.BufferReader(data), parse_options=pajson.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"))
    except Exception as err:  # noqa: BLE001 - any unreadable file is quarantined with the reason
        what = "Parquet" if key.endswith(".parquet") else "gzip JSON Lines"
        return None, f"not a readable {what} file: {type(err).__name__}: {str(err)[:200]}"
    all_null = False
    for want in schema:
        if want.name not in table.column_names:
            return None, f"column {want.name} is missing"
        got = table.schema.field(want.name).type
        if got == pa.null():
            all_null = True
        elif got != want.type:
            return None, f"column {want.name} is {got}, the contract says {want.type}"
    table = table.select(schema.names)
    # the types are the contract's already but for all-null columns: cast only then (a cast per file
    # and column was a tenth of the read)
    return (table.cast(schema.remove_metadata()) if all_null else table.replace_schema_metadata(None)), None


_CANONICAL: dict[str | None, str | None] = {}  # per worker process: a fleet repeats the same addresses
CANONICAL_CACHE_MAX = 1 << 16


def _canonical_array(col: pa.ChunkedArray) -> pa.Array:
    """Canonical IP texts (None where not an IP), worked out once per distinct value."""
    col = col.combine_chunks()
    distinct = pc.unique(col)
    if len(_CANONICAL) > CANONICAL_CACHE_MAX:
        _CANONICAL.clear()
    canon = []
    for value in distinct.to_pylist():
        if value not in _CANONICAL:
            _CANONICAL[value] = canonical_or_none(value)
        canon.append(_CANONICAL[value])
    return pc.take(pa.array(canon, type=pa.string()), pc.index_in(col, value_set=distinct))


INSTANCE_MISMATCH = "instance_id differs from the key's instance= folder"


def instance_mismatch(instance_ids: pa.ChunkedArray, key: str) -> pa.Array:
    """Per row of one flow file (its ``key`` follows the layout, :func:`key_reason`): why its
    ``instance_id`` is not the key's ``instance=`` folder, or null."""
    folder = RAW_KEY_RE.match(key).group("instance")
    differs = pc.fill_null(pc.not_equal(instance_ids, pa.scalar(folder, pa.string())), False)
    if not pc.any(differs).as_py():
        return pa.nulls(len(instance_ids), pa.string())
    text = pc.binary_join_element_wise(f"{INSTANCE_MISMATCH} (", instance_ids, f" vs {folder})", "")
    return pc.if_else(differs, text, pa.scalar(None, pa.string())).combine_chunks()


def reader_ddl(kind: str) -> str:
    """Schema of :func:`read_files`' rows."""
    base = RAW_FLOW_DDL if kind == KIND_FLOWS else IP_EVENT_DDL
    if kind == KIND_FLOWS:
        return (f"{base}, source_file string, _local_ip_c string, _remote_ip_c string, _file_reason string, "
                "_row_reason string")
    return f"{base}, source_file string, _ip_c string, _file_reason string"


def read_keys(keys: Iterable[str], *, raw_root: str, kind: str,
              batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The rows of raw files as one Spark task reads them (:func:`reader_ddl`'s columns), in Arrow batches.

    Each file's rows come with ``source_file`` and canonical IPs; a file that cannot be read gives one
    row with only ``source_file`` and ``_file_reason``. Flow rows whose ``instance_id`` is not the key's
    ``instance=`` folder say so in ``_row_reason`` (worked out here, once per file, where the key is
    known). Files are concatenated into batches of up to ``batch_rows`` rows and their IPs
    canonicalised once per batch (a small file's few hundred rows would each cost the JVM a batch,
    and a canonicalisation, of fixed overhead)."""
    schema = RAW_FLOW_SCHEMA if kind == KIND_FLOWS else IP_EVENT_SCHEMA
    ip_cols = ["local_ip", "remote_ip"] if kind == KIND_FLOWS else ["ip"]
    out_names = ddl_columns(reader_ddl(kind))
    extra = [pa.field("_row_reason", pa.string())] if kind == KIND_FLOWS else []
    file_schema = pa.schema([*schema.remove_metadata(), pa.field("source_file", pa.string()),
                             pa.field("_file_reason", pa.string()), *extra])
    loc = resolve(raw_root)

    def one_file(key: str) -> pa.Table:
        table, reason = read_contract_file(loc, key, kind=kind)
        src = loc.uri(f"{loc.path}/{key}")
        if table is None:
            cols = [pa.nulls(1, f.type) for f in schema] + [pa.array([src]), pa.array([reason])]
            cols += [pa.nulls(1, pa.string())] if extra else []
        else:
            cols = [*table.columns, pa.repeat(src, table.num_rows), pa.nulls(table.num_rows, pa.string())]
            cols += [instance_mismatch(table.column("instance_id"), key)] if extra else []
        return pa.Table.from_arrays(cols, schema=file_schema)

    def batches_of(tables: list[pa.Table]) -> list[pa.RecordBatch]:
        whole = pa.concat_tables(tables).combine_chunks()
        cols = {n: whole.column(n) for n in whole.column_names}
        cols.update({f"_{c}_c": _canonical_array(whole.column(c)) for c in ip_cols})
        return pa.Table.from_arrays([cols[n] for n in out_names], names=out_names).to_batches()

    pending, rows = [], 0
    for key in keys:
        pending.append(one_file(key))
        rows += pending[-1].num_rows
        if rows >= batch_rows:
            yield from batches_of(pending)
            pending, rows = [], 0
    if pending:
        yield from batches_of(pending)


def read_files(spark: SparkSession, *, raw_root: str, keys: list[str], kind: str,
               batch_rows: int = BATCH_ROWS) -> DataFrame:
    """All rows of the given raw files, read in Spark tasks with pyarrow (:func:`read_keys`).

    Each file is read whole by one task. About 2.4 ms per raw file of some 300 records, of which
    pyarrow's Parquet read is 0.8 ms (``bench/raw_read.py``).
    """
    def read_batches(batches):  # one task: its keys, however Spark batched them, read as one stream
        keys = (key for batch in batches for key in batch.column("key").to_pylist())
        yield from read_keys(keys, raw_root=raw_root, kind=kind, batch_rows=batch_rows)

    partitions = max(1, min(len(keys) // FILES_PER_TASK + 1, spark.sparkContext.defaultParallelism * 4))
    keys_df = spark.createDataFrame([(k,) for k in keys], "key string").repartition(partitions)
    return keys_df.mapInArrow(read_batches, reader_ddl(kind))
