"""shared.series.merge_slot_ranges: the ranges of slot ends the flow and the aggregates recompute, merged."""

from shared.schema import SLOT_NS
from shared.series import merge_slot_ranges

S = SLOT_NS


def test_overlapping_and_adjacent_ranges_merge_and_gaps_stay():
    assert merge_slot_ranges([]) == []
    assert merge_slot_ranges([(5 * S, 7 * S), (S, 2 * S), (3 * S, 4 * S), (6 * S, 9 * S), (11 * S, 11 * S)]) == [
        (S, 9 * S), (11 * S, 11 * S)]
    assert merge_slot_ranges([(S, 2 * S), (4 * S, 5 * S)]) == [(S, 2 * S), (4 * S, 5 * S)]  # a slot between: apart
