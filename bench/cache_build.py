"""Spark's in-memory cache of a lake's bronze rows: compressed (Spark's default, what runs use) vs not.

    .venv/bin/python bench/cache_build.py --lake /tmp/flowlake-bench-pipeline/r10000000/lake [--rounds 2]

A profile, not a product comparison. Ingest caches the validated rows of every new file and attribute
caches the attributed rows: building such a cache gathers, per value, the statistics Spark uses to choose
each cached column's compression. This builds a cache of ``bronze/flows`` (read from the lake, counted)
with ``spark.sql.inMemoryColumnarStorage.compressed`` true and false, also with ``source_file`` replaced
by a 64-bit hash (the longest string of a record), and prints per variant the build seconds (the
Parquet read included, the same for all), one aggregate's scan seconds, and the cache's memory and disk
size. Both settings hold the same rows (the counts are printed and must agree).
"""

from __future__ import annotations

import argparse
import os
import time

from pyspark.sql import functions as F

from flowlake.lake import BRONZE_FLOWS, Lake
from flowlake.spark import get_spark

CACHE_COMPRESSED = "spark.sql.inMemoryColumnarStorage.compressed"
MIB = 1 << 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lake", required=True, help="a lake with bronze/flows (e.g. bench/pipeline.py's)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="Spark local[N]")
    args = ap.parse_args()
    spark = get_spark(master=f"local[{args.threads}]")
    bronze = spark.read.format("delta").load(Lake(args.lake).path(BRONZE_FLOWS))
    variants = {"rows as stored": bronze,
                "source_file hashed": bronze.withColumn("source_file", F.xxhash64("source_file"))}
    counts = set()
    for round_ in range(1, args.rounds + 1):
        for compressed in ("true", "false"):
            for name, df in variants.items():
                spark.conf.set(CACHE_COMPRESSED, compressed)
                cached = df.select("*")  # a new plan each time: a new cache entry
                began = time.perf_counter()
                rows = cached.persist().count()
                built = time.perf_counter() - began
                began = time.perf_counter()
                cached.agg(F.sum("bytes_sent"), F.max("source_file")).collect()
                scanned = time.perf_counter() - began
                infos = spark.sparkContext._jsc.sc().getRDDStorageInfo()
                memory = sum(i.memSize() for i in infos) / MIB
                disk = sum(i.diskSize() for i in infos) / MIB
                print(f"round {round_}: compressed={compressed:5} {name:18} {rows:,} rows: build {built:.1f} s, "
                      f"scan {scanned:.1f} s, memory {memory:,.0f} MiB, disk {disk:,.0f} MiB", flush=True)
                counts.add(rows)
                cached.unpersist(blocking=True)
    if len(counts) != 1:
        raise SystemExit(f"the variants cached different row counts: {sorted(counts)}")
    load = os.getloadavg()
    print(f"load: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
