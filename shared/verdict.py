"""Whether a forecast is good, in words a homeowner reads: better, about the same or worse than the best simple
guess (a naive baseline), and how long a new model is still learning. One wording for the server's page, the demo,
the agent's status and Home Assistant, so they never disagree.

Thresholds (`ABOUT_SAME`): a model whose MAE is within 2 % of the best baseline's on the same slots is "about the
same" — neither green nor red. Why 2 %: the spread between training seeds on the seed house is about 1 % of that
ratio (0.931–0.941 next slot, README), so a smaller difference says nothing about the model; and the agent's guard
puts a model back into service from a skill of +2 % (`guard_return_skill`, docs/edge-models.md). Below 0.98 × the
baseline's error it is "better", above 1.02 × "worse".
"""

from __future__ import annotations

import math

ABOUT_SAME = 0.02  # |MAE / baseline MAE − 1| below this: "about the same"
SLOTS_PER_DAY = 96  # scored slots a day, next slot and day ahead alike (the day-ahead issue covers 96 slots)

BETTER, SAME, WORSE = "better", "about the same", "worse"

BASELINE_WORDS = {
    "persistence": "the last 15 minutes repeated",
    "same_slot_yesterday": "the same time yesterday",
    "same slot yesterday": "the same time yesterday",
    "same_slot_last_week": "the same time last week",
    "median_7_days": "the median of the same time over the last 7 days",
    "best baseline": "the best simple guess",
}
HORIZON_WORDS = {1: "next 15 min", 96: "day ahead"}

# The original project's figures on the seed test split (data/seed_house/README.md): what every training reports
# (training.train) and the server's page and API show beside a version's own.
SEED_REFERENCE = {
    "seed_lstm_rmse": 0.12, "seed_cnn_rmse": 0.14, "persistence_rmse": 0.079, "persistence_mae": 0.045,
}


def baseline_words(name: str | None) -> str:
    """A baseline's name in plain words (unknown names as they are)."""
    if not name:
        return "the best simple guess"
    return BASELINE_WORDS.get(name, name.replace("_", " "))


def horizon_words(horizon: int | str | None) -> str:
    try:
        return HORIZON_WORDS.get(int(horizon), f"{int(horizon)} slots ahead")
    except (TypeError, ValueError):
        return "forecast"


def verdict(ratio: float | None) -> str | None:
    """better / about the same / worse for MAE ÷ the best baseline's MAE (None when unknown)."""
    if ratio is None or not math.isfinite(ratio):
        return None
    if ratio <= 1 - ABOUT_SAME:
        return BETTER
    if ratio >= 1 + ABOUT_SAME:
        return WORSE
    return SAME


def ratio_of_skill(skill: float | None) -> float | None:
    """The agent's skill (1 − MAE / baseline MAE) as the error ratio (MAE / baseline MAE)."""
    return None if skill is None or not math.isfinite(skill) else 1.0 - skill


def in_words(ratio: float | None, baseline: str | None) -> str | None:
    """"6 % better than the last 15 minutes repeated", "about the same as …", "3 % worse than …"."""
    v = verdict(ratio)
    if v is None:
        return None
    what = baseline_words(baseline)
    if v == SAME:
        return f"about the same as {what}"
    return f"{abs(1 - ratio) * 100:.0f} % {v} than {what}"


def sentence(horizon: int | str | None, ratio: float | None, baseline: str | None) -> str | None:
    """One line per model: "next 15 min: 6 % better than the last 15 minutes repeated"."""
    words = in_words(ratio, baseline)
    return None if words is None else f"{horizon_words(horizon)}: {words}"


def time_left(slots_missing: int, slots_per_day: int = SLOTS_PER_DAY) -> str:
    """"about 2 days left", "about 5 hours left" for slots still to score at one a slot (96 a day)."""
    days = slots_missing / slots_per_day
    if days >= 1.5:
        return f"about {round(days)} days left"
    hours = days * 24
    if hours >= 1.5:
        return f"about {round(hours)} hours left"
    return "about an hour left" if hours >= 0.5 else "less than an hour left"


def learning(slots: int | None, need: int | None) -> str:
    """"learning: 120 of 300 slots scored, about 2 days left" (plain "learning" when the figures are unknown)."""
    if slots is None or not need:
        return "learning"
    slots = max(0, int(slots))
    if slots >= need:
        return f"learning: {slots} of {need} slots scored"
    return f"learning: {slots} of {need} slots scored, {time_left(need - slots)}"
