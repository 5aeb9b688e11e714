"""Raw-file read: the ingest reader's task body vs pyarrow's bare read of the same files, one process.

    .venv/bin/python bench/raw_read.py --raw /tmp/flowlake-bench-pipeline/r10000000/raw [--files 6000] [--repeat 2]

flowlake: :func:`flowlake.jobs.bronze.rawfiles.read_keys`, what one Spark task of the ingest stage
runs over its files (contract checks, canonical IPs, ``source_file``, Arrow batches for the JVM),
without Spark. Baseline: ``pyarrow.parquet.read_table`` of each file, nothing else: the floor any
reader pays. Both read the same first ``--files`` flow files (page cache warm after the first
round); the row counts must agree. Prints ms per file for each and their ratio, per round.
"""

from __future__ import annotations

import argparse
import os
import time

import pyarrow.parquet as pq

from flowlake.contracts import RAW_FLOWS_PREFIX
from flowlake.jobs.bronze.rawfiles import KIND_FLOWS, list_files, read_keys
from flowlake.storage import resolve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", required=True, help="a raw root with flow files (e.g. bench/pipeline.py's --data)")
    ap.add_argument("--files", type=int, default=6000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    loc = resolve(args.raw)
    keys = list_files(loc, [RAW_FLOWS_PREFIX])[:args.files]
    if not keys:
        raise SystemExit(f"no flow files under {args.raw}/{RAW_FLOWS_PREFIX}")
    for round_ in range(1, args.repeat + 1):
        began = time.perf_counter()
        ours = sum(b.num_rows for b in read_keys(keys, raw_root=args.raw, kind=KIND_FLOWS))
        flowlake_s = time.perf_counter() - began
        began = time.perf_counter()
        bare = sum(pq.read_table(os.path.join(args.raw, k)).num_rows for k in keys)
        bare_s = time.perf_counter() - began
        if ours != bare:
            raise SystemExit(f"row counts differ: flowlake {ours}, pyarrow {bare}")
        n = len(keys)
        print(f"round {round_}: {n} files, {ours:,} rows: flowlake {1000 * flowlake_s / n:.2f} ms/file, "
              f"pyarrow read_table {1000 * bare_s / n:.2f} ms/file, ratio {flowlake_s / bare_s:.2f}x", flush=True)
    print(f"load: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
