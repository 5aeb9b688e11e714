"""backfill.windows: [start, end) in aligned steps (pure; split out of the end-to-end fault test)."""

import pytest

from flowlake.jobs.run.backfill import progress, windows

HOUR = 3_600_000


def test_windows_cut_the_range_in_steps_and_the_last_may_be_shorter():
    assert windows(start_ms=0, end_ms=5 * HOUR, step_ms=2 * HOUR) == [(0, 2 * HOUR), (2 * HOUR, 4 * HOUR),
                                                                      (4 * HOUR, 5 * HOUR)]
    assert windows(start_ms=HOUR, end_ms=3 * HOUR, step_ms=HOUR) == [(HOUR, 2 * HOUR), (2 * HOUR, 3 * HOUR)]


@pytest.mark.parametrize("start, end, step, match", [
    (HOUR, HOUR, HOUR, "--end must be after --start"),
    (2 * HOUR, HOUR, HOUR, "--end must be after --start"),
    (0, HOUR, 0, "step must be positive"),
])
def test_empty_or_backwards_ranges_and_zero_steps_are_refused(start, end, step, match):
    with pytest.raises(ValueError, match=match):
        windows(start_ms=start, end_ms=end, step_ms=step)


def test_progress_counts_the_windows_to_run_and_estimates_the_rest_at_the_pace_so_far():
    assert progress(done=0, total=24, seconds=[]) == "window 1 of 24"  # no pace yet: no estimate
    assert progress(done=2, total=24, seconds=[100.0, 140.0]) == "window 3 of 24, about 44 min left"
    assert progress(done=22, total=24, seconds=[30.0] * 22) == "window 23 of 24, about 60 s left"
