"""Training progress lines: which model of the run, a time-left estimate once there is something to extrapolate,
bundles weighted by what they cost — and the server's task parses them."""

from __future__ import annotations

from training import progress as p
from training.plans import PLANS, TrainOptions
from training.task import _event


def test_progress_names_the_model_and_estimates_the_time_left(capsys, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(p.time, "monotonic", lambda: now[0])
    p.start_run()
    p.begin_model(3, 4)
    p.progress(0.5, "cnn-96: building samples")  # nothing to extrapolate from yet
    now[0] += 120
    p.progress(40, "cnn-96 member 2/5: epoch 7")  # 120 s for 40 %: 180 s to go
    now[0] += 170
    p.progress(97, "lstm-96: int8 export")
    p.progress(100, "done")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "progress: 0 model 3 of 4: cnn-96: building samples"
    assert lines[1] == "progress: 40 model 3 of 4: cnn-96 member 2/5: epoch 7 — about 3 min left"
    assert lines[2] == "progress: 97 model 3 of 4: lstm-96: int8 export — less than a minute left"
    assert lines[3] == "progress: 100 model 3 of 4: done"
    assert _event(lines[1]) == {"progress": 40.0, "stage": "model 3 of 4: cnn-96 member 2/5: epoch 7 — about 3 min left"}


def test_the_bar_is_weighted_by_what_each_bundle_costs():
    """On the full year lstm-96 takes about two thirds of the time (make bench-train): so it gets that much of the
    bar, and the bar no longer sits at 52 % and 73-86 % for minutes."""
    full, quick = TrainOptions(), TrainOptions(quick=True)
    shares = {plan.name: full.cost(plan) / sum(full.cost(q) for q in PLANS) for plan in PLANS}
    assert 0.6 < shares["lstm-96"] < 0.7 and shares["cnn-1"] < 0.05
    assert all(quick.cost(plan) < full.cost(plan) for plan in PLANS)
