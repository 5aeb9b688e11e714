"""The maintain stage's one line for the whole lake (the per-table lines go to the run's log)."""
from __future__ import annotations

from flowlake.jobs.run.maintain import Maintained, summary

RETAIN_H = 168


def test_summary_counts_only_tables_whose_files_were_rewritten():
    done = [Maintained("silver/flows_attributed", (7, 2), 3, RETAIN_H),
            Maintained("bronze/flows", (0, 0), 0, RETAIN_H),  # OPTIMIZE ran, nothing in the span's days
            Maintained("gold/segments", None, 1, RETAIN_H)]  # below compact_min_files
    assert summary(done) == ("maintain: 3 table(s); compacted 1 (7 file(s) into 2); "
                             "vacuumed (keeping 168 h, 4 file(s) deleted)")
    assert str(done[2]) == "gold/segments: no compaction needed; vacuumed (keeping 168 h, 1 file(s) deleted)"


def test_summary_of_an_empty_lake():
    assert summary([]) == "maintain: 0 table(s); nothing to compact; vacuumed (nothing to vacuum, 0 file(s) deleted)"


def test_summary_when_optimize_rewrote_nothing():
    done = [Maintained("bronze/flows", (0, 0), 0, RETAIN_H), Maintained("gold/segments", None, 2, RETAIN_H)]
    assert summary(done) == "maintain: 2 table(s); nothing to compact; vacuumed (keeping 168 h, 2 file(s) deleted)"
