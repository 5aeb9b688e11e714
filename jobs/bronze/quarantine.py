"""Quarantine copies of raw files: where a bad file goes, and the copies a dead run left behind."""

from __future__ import annotations

import hashlib
import logging
import re

import pyarrow.fs as pafs
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from flowlake.jobs.run import io
from flowlake.lake import QUARANTINE_COPIES, QUARANTINE_FILES, Lake
from flowlake.storage import Location, resolve

log = logging.getLogger(__name__)


def quarantine_copy(loc: Location, key: str, dest_root: str) -> tuple[str | None, str | None]:
    """Copy a raw file under the run's quarantine folder: (its URI, None) or (None, why the copy failed)."""
    dest = resolve(dest_root)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._=-]", "_", key.rsplit("/", 1)[-1])[-100:] or "file"
    target = f"{dest.path}/{digest}-{name}"
    try:
        dest.fs.create_dir(dest.path, recursive=True)
        pafs.copy_files(f"{loc.path}/{key}", target, source_filesystem=loc.fs, destination_filesystem=dest.fs)
    except Exception as err:  # noqa: BLE001 - the log still names the original (source_file)
        log.warning("could not copy %s to quarantine: %s", key, err)
        return None, f"{type(err).__name__}: {str(err)[:300]}"
    return dest.uri(target), None


def remove_orphan_copies(spark: SparkSession, lake: Lake, *, run_id: str) -> list[str]:
    """Delete quarantine copies of other runs that no quarantine/files entry points to (their run died
    between copying and logging; the files were quarantined again since, or will be). Returns their URIs."""
    loc = lake.location
    base = f"{loc.path}/{QUARANTINE_COPIES}"
    infos = loc.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    mine = f"{base}/{run_id}/"
    copies = {loc.uri(i.path) for i in infos if i.type == pafs.FileType.File and not i.path.startswith(mine)}
    if not copies:
        return []
    logged = {r[0] for r in io.read(spark, lake, QUARANTINE_FILES).select("quarantine_path")
              .where(F.col("quarantine_path").isNotNull()).toLocalIterator()}
    orphans = sorted(copies - logged)
    for uri in orphans:
        loc.fs.delete_file(uri.removeprefix("s3a://") if loc.scheme else uri)
    if orphans:
        log.warning("removed %d quarantine copies left by run(s) that never committed: %s", len(orphans),
                    ", ".join(orphans))
    return orphans
