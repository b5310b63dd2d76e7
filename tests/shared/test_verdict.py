"""The verdict in words (shared.verdict): thresholds, baseline names in plain words, the learning line."""

from __future__ import annotations

import pytest

from shared import verdict


@pytest.mark.parametrize(("ratio", "expected"), [
    (0.94, "better"), (0.98, "better"), (0.981, "about the same"), (0.998, "about the same"), (1.0, "about the same"),
    (1.019, "about the same"), (1.02, "worse"), (1.3, "worse"), (None, None), (float("nan"), None)])
def test_thresholds(ratio, expected):
    assert verdict.verdict(ratio) == expected


def test_sentences_name_the_baseline_in_plain_words():
    assert verdict.sentence(1, 0.94, "persistence") == "next 15 min: 6 % better than the last 15 minutes repeated"
    assert verdict.sentence(96, 0.93, "median_7_days") == \
        "day ahead: 7 % better than the median of the same time over the last 7 days"
    assert verdict.sentence(96, 0.998, "same_slot_yesterday") == "day ahead: about the same as the same time yesterday"
    assert verdict.sentence("1", 1.05, "same_slot_last_week") == "next 15 min: 5 % worse than the same time last week"
    assert verdict.in_words(verdict.ratio_of_skill(0.12), None) == "12 % better than the best simple guess"
    assert verdict.sentence(1, None, "persistence") is None


@pytest.mark.parametrize(("slots", "need", "text"), [
    (120, 300, "learning: 120 of 300 slots scored, about 2 days left"),
    (0, 480, "learning: 0 of 480 slots scored, about 5 days left"),
    (0, 16, "learning: 0 of 16 slots scored, about 4 hours left"),
    (290, 300, "learning: 290 of 300 slots scored, about 2 hours left"),
    (299, 300, "learning: 299 of 300 slots scored, less than an hour left"),
    (300, 300, "learning: 300 of 300 slots scored"),
    (None, 300, "learning"), (5, None, "learning")])
def test_learning_says_how_far_and_how_long(slots, need, text):
    assert verdict.learning(slots, need) == text
