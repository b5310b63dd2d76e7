"""What `train` trains — one BundlePlan per bundle in shared.schema.BUNDLE_NAMES — and the run's options."""

from __future__ import annotations

from dataclasses import dataclass

from shared.calendar import HolidayCalendar
from shared.schema import SLOTS_PER_DAY
from shared.window import HOLIDAY, WindowSpec, feature_names


@dataclass(frozen=True)
class BundlePlan:
    kind: str
    layout: str
    steps: int
    horizon: int
    loss: str
    every: int  # use every n-th issue time for training (day-ahead samples overlap heavily)
    residual: str | None = None
    members: int = 1  # independently seeded copies averaged in one graph
    min_known: float = 1.0  # keep training samples with at least this fraction of known target slots
    learning_rate: float = 2e-3
    refit_epochs: int = 0  # after early stopping: epochs on training + validation data (training.fit.refit)
    # what a training of this bundle costs, in seconds on the full year (make bench-train, 2026-11-26) and with
    # --quick (make demo's quick training on 30 days, 2026-12-07, busy machine): the progress bar's weights, so that its time-left estimate holds
    cost: float = 1.0
    quick_cost: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.horizon}"

    def window(self, holidays: HolidayCalendar | None = None) -> WindowSpec:
        """The plan's window, not yet scaled (training sets mean and std from its training targets); with a
        holiday calendar, the `holiday` input is added and the calendar declared."""
        if holidays is None:
            return WindowSpec(layout=self.layout, steps=self.steps, horizon=self.horizon, residual=self.residual)
        return WindowSpec(layout=self.layout, steps=self.steps, horizon=self.horizon, residual=self.residual,
                          features=[*feature_names(self.layout), HOLIDAY], holidays=holidays.to_dict())


DAY = SLOTS_PER_DAY  # day-ahead: one input step per target slot of the next day

# Day-ahead windows of neighbouring issue times overlap almost entirely, yet the CNN learns more from all of them
# than from every third (it early-stops after about one pass): July 2023 0.954 / 0.949 / 0.952 instead of
# 0.968 / 0.953 / 0.957 × the best baseline for seeds 42 / 7 / 123, at twice the training time (docs/training.md).
# The LSTM gained 0.1 % (seed 42), less than the seeds' spread, so it keeps every third.
PLANS = (
    BundlePlan("cnn", "next", 32, 1, "mse", 1, "value", members=3, cost=19.7, quick_cost=7.2),
    BundlePlan("lstm", "next", 16, 1, "mse", 1, "value", cost=15.2, quick_cost=10.0),
    BundlePlan("cnn", "day", DAY, DAY, "masked_mae", 1, "pool7d8_q50", members=5, min_known=0.5,
               learning_rate=1e-3, refit_epochs=2, cost=121.6, quick_cost=14.4),
    BundlePlan("lstm", "day", DAY, DAY, "masked_mae", 3, "pool7d8_q50", members=8, min_known=0.5,
               learning_rate=1e-3, refit_epochs=2, cost=298.7, quick_cost=42.8),
)


@dataclass
class TrainOptions:
    until_ns: int | None = None
    validation_fraction: float = 0.15
    max_epochs: int = 40
    patience: int = 5
    batch_size: int = 128
    seed: int = 42
    quick: bool = False  # tiny epochs/samples/ensembles: for tests only
    only: tuple[str, ...] = ()
    holidays: HolidayCalendar | None = None  # public holidays as an input (none by default)

    @property
    def epochs(self) -> int:
        return 2 if self.quick else self.max_epochs

    def members(self, plan: BundlePlan) -> int:
        return 1 if self.quick else plan.members

    def refit_epochs(self, plan: BundlePlan) -> int:
        """0: no refit."""
        return min(plan.refit_epochs, 1) if self.quick else plan.refit_epochs

    def cost(self, plan: BundlePlan) -> float:
        """The plan's expected share of the run (progress weights)."""
        return plan.quick_cost if self.quick else plan.cost

    def plans(self) -> list[BundlePlan]:
        """The plans to train: all, or those named by `only`."""
        return [p for p in PLANS if not self.only or p.name in self.only]
