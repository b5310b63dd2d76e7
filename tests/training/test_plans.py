"""The training plans against the schema contract, the quick options and the validation split (no Keras)."""

import numpy as np

from shared.schema import BUNDLE_NAMES, SLOT_NS
from training.plans import PLANS, TrainOptions
from training.train import split_issues


def test_plans_train_exactly_the_schema_bundle_names():
    assert tuple(p.name for p in PLANS) == BUNDLE_NAMES
    assert [p.name for p in TrainOptions(only=("lstm-96", "cnn-1")).plans()] == ["cnn-1", "lstm-96"]


def test_quick_options_shrink_ensembles_and_refits_but_never_add_a_refit():
    quick, full = TrainOptions(quick=True), TrainOptions()
    for plan in PLANS:
        assert quick.members(plan) == 1 and full.members(plan) == plan.members
        assert full.refit_epochs(plan) == plan.refit_epochs
        assert quick.refit_epochs(plan) == (1 if plan.refit_epochs else 0)
    assert quick.epochs == 2 and TrainOptions(max_epochs=7).epochs == 7


def test_split_drops_training_issues_whose_targets_reach_into_validation():
    issues = np.arange(1000, dtype=np.int64) * SLOT_NS
    train, val = split_issues(issues, 96, 0.15)
    assert val[0] == issues[850] and len(val) == 150
    assert train[-1] + 96 * SLOT_NS < val[0] and train[-1] + 97 * SLOT_NS >= val[0]

