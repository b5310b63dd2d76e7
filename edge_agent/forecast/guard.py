"""The guard: a model that has lost to the best naive baseline over the last days is taken out of service.

Every cycle, after scoring (edge_agent/forecast/skill.py), each loaded bundle is judged on its live figures over
`guard_days` (default 7) — its MAE against the best baseline's MAE on the same slots (the ledger's statistics,
edge_agent/forecast/scoring.py; the guard itself does no I/O either):
- `learning`: fewer than `guard_min_slots_1` (300) next-slot slots, or `guard_min_slots_96` (480, five days)
  day-ahead slots, scored for this version: too little evidence either way; it serves.
- `shadow`: it lost (model MAE > baseline MAE): the forecast loop serves the baseline it lost to for the horizon
  (when no other model of the horizon serves) with the reason as the fallback reason, and keeps running and
  writing the model's forecasts (`shadow` = true) so that they go on being scored.
- `serving`: enough slots and not lost — or back from the shadow once its skill is at least `guard_return_skill`
  (default 0.02: a model hovering at the baseline's level does not flip every cycle), or because a new version
  arrived (a version is judged on its own slots only).
The verdicts are derived from the scored slots, which a restart reads back, so a restarted agent judges alike; only
the hysteresis is not kept (after a restart a model between 0 and `guard_return_skill` serves).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from edge_agent.forecast.scoring import BASELINE, FAMILY, Key, Stats
from shared import verdict as words
from shared.schema import DAY_NS
from shared.series import iso

LEARNING, SERVING, SHADOW = "learning", "serving", "shadow"


@dataclass
class GuardConfig:
    enabled: bool = True
    days: float = 7.0
    min_slots: dict[int, int] = field(default_factory=lambda: {1: 300, 96: 480})
    return_skill: float = 0.02


@dataclass
class Verdict:
    name: str
    version: str
    horizon: int
    state: str
    since_ns: int
    reason: str | None = None
    stats: Stats | None = None
    min_slots: int = 0  # slots this horizon needs before the guard judges (learning until then)

    @property
    def summary(self) -> str:
        """The verdict in words (shared.verdict): "learning: 120 of 300 slots scored, about 2 days left",
        "6 % better than the same time yesterday", or why it is in the shadow."""
        st = self.stats
        if self.state == LEARNING:
            return words.learning(st.skill_slots if st else 0, self.min_slots)
        said = words.in_words(words.ratio_of_skill(st.skill if st else None), st.baseline if st else None)
        if self.state == SHADOW:
            return f"in the shadow (the baseline serves): {said or 'lost to the best simple guess'}"
        return said or self.state

    def to_dict(self) -> dict:
        st = self.stats
        return {"version": self.version, "horizon": self.horizon, "state": self.state, "since": iso(self.since_ns),
                "reason": self.reason, "skill": None if st is None or st.skill is None else round(st.skill, 4),
                "slots": st.skill_slots if st else 0, "min_slots": self.min_slots, "summary": self.summary,
                "baseline": st.baseline if st else None,
                "mae_kwh": None if st is None or st.model_mae is None else round(st.model_mae, 5),
                "baseline_mae_kwh": None if st is None or st.baseline_mae is None else round(st.baseline_mae, 5)}


class Figures(Protocol):
    """The latest rolling figures (edge_agent/forecast/skill.py's Scorer): the guard needs no storage."""

    figures: dict[int, dict[Key, dict[str, Stats]]]
    issued_ns: int | None  # the cycle they are for


class Guard:
    def __init__(self, cfg: GuardConfig):
        self.cfg = cfg
        self.verdicts: dict[str, Verdict] = {}

    def update(self, issue_ns: int, models: dict[str, tuple[int, str, str]],
               stats: Callable[[int, Key, int], Stats | None]) -> list[str]:
        """Judge the loaded models (name → (horizon, kind, version)) with `stats(horizon, key, since_ns)`;
        returns a message for every change worth a log line."""
        since = issue_ns - int(self.cfg.days * DAY_NS)
        verdicts, changes = {}, []
        for name, (horizon, kind, version) in sorted(models.items()):
            st = stats(horizon, (kind, name, version), since)
            before = self.verdicts.get(name)
            if before is not None and before.version != version:
                if before.state == SHADOW:
                    changes.append(f"guard: {name} {version} replaces {before.version}, which was kept in the shadow: "
                                   f"serving the new version")
                before = None
            enough = st is not None and st.baseline_mae is not None \
                and st.skill_slots >= self.cfg.min_slots.get(horizon, 1)
            lost = enough and st.model_mae > st.baseline_mae
            wins = enough and st.model_mae <= (1.0 - self.cfg.return_skill) * st.baseline_mae
            was_shadow = before is not None and before.state == SHADOW
            shadow = self.cfg.enabled and (not wins if was_shadow else lost)
            state = SHADOW if shadow else (SERVING if enough else LEARNING)
            since_ns = before.since_ns if before is not None and before.state == state else issue_ns
            reason = self._reason(name, version, st) if shadow else None
            verdicts[name] = Verdict(name, version, horizon, state, since_ns, reason, st,
                                     self.cfg.min_slots.get(horizon, 1))
            if shadow and not was_shadow:
                changes.append(f"{reason}: serving the baseline for horizon {horizon} until it wins again or a new "
                               f"version arrives")
            elif was_shadow and not shadow:
                changes.append(f"guard: {name} {version} wins again over {self._days} "
                               f"({_figures(st)}): serving it again")
        self.verdicts = verdicts
        return changes

    def _reason(self, name: str, version: str, st: Stats) -> str:
        return (f"guard: {name} {version} lost to {st.baseline} over {self._days} ({_figures(st)}; back at a "
                f"skill of {self.cfg.return_skill:+.1%})")

    @property
    def _days(self) -> str:
        return f"the last {self.cfg.days:g} day" + ("" if self.cfg.days == 1 else "s")

    def shadowed(self, name: str, version: str) -> Verdict | None:
        v = self.verdicts.get(name)
        return v if v is not None and v.version == version and v.state == SHADOW else None

    def baseline(self, horizon: int) -> str | None:
        """The baseline a shadowed model of the horizon lost to (the first by name), if any."""
        return next((v.stats.baseline for _, v in sorted(self.verdicts.items())
                     if v.horizon == horizon and v.state == SHADOW and v.stats and v.stats.baseline), None)

    def status(self) -> dict:
        return {"enabled": self.cfg.enabled, "window_days": self.cfg.days,
                "min_slots": {str(h): n for h, n in sorted(self.cfg.min_slots.items())},
                "return_skill": self.cfg.return_skill,
                "models": {n: v.to_dict() for n, v in sorted(self.verdicts.items())}}


def _figures(st: Stats | None) -> str:
    if st is None or st.model_mae is None:
        return "not scored"
    skill = "n/a" if st.skill is None else f"{st.skill:+.1%}"
    return f"MAE {st.model_mae:.4f} vs {st.baseline_mae:.4f} kWh on {st.skill_slots} slots, skill {skill}"


def skill_payload(issue_ns: int, horizon: int, scorer: Figures, guard: Guard, loaded: dict[str, tuple[int, str, str]],
                  preferred_kinds: list[str]) -> dict:
    """What `<prefix>/forecast/skill/<horizon>` carries (Home Assistant's skill sensor, docs/home-assistant.md): the
    live skill over 7 days of the horizon's preferred loaded model, its figures and the guard's verdict."""
    fam = FAMILY[horizon]
    figures = scorer.figures.get(horizon, {}) if scorer.issued_ns == issue_ns else {}
    order = {k: i for i, k in enumerate(preferred_kinds)}
    mine = sorted(((order.get(kind, 99), name, kind, version) for name, (h, kind, version) in loaded.items()
                   if h == horizon))
    doc: dict = {"issued_at": iso(issue_ns), "horizon": horizon, "issue": fam.issue, "window": "7d", "name": None,
                 "model": None, "version": None, "skill": None, "skill_1d": None, "skill_30d": None, "slots": 0,
                 "mae_kwh": None, "baseline": None, "baseline_mae_kwh": None, "state": None, "guard_reason": None,
                 "summary": None}
    baselines = [(st.mae, key[1]) for key, w in figures.items() if key[0] == BASELINE and (st := w.get("7d"))]
    if baselines:
        mae, name = min(baselines)
        doc |= {"baseline": name, "baseline_mae_kwh": round(mae, 5)}
    if not mine:
        return doc
    _, name, kind, version = mine[0]
    windows = figures.get((kind, name, version), {})
    rnd = lambda v: None if v is None else round(v, 4)  # noqa: E731
    doc |= {"name": name, "model": kind, "version": version,
            "skill_1d": rnd(windows["1d"].skill) if "1d" in windows else None,
            "skill_30d": rnd(windows["30d"].skill) if "30d" in windows else None}
    week = windows.get("7d")
    if week is not None and week.baseline is not None:
        doc |= {"skill": rnd(week.skill), "slots": week.skill_slots, "mae_kwh": round(week.model_mae, 5),
                "baseline": week.baseline, "baseline_mae_kwh": round(week.baseline_mae, 5)}
    verdict = guard.verdicts.get(name)
    if verdict is not None and verdict.version == version:
        doc |= {"state": verdict.state, "guard_reason": verdict.reason, "summary": verdict.summary}
    return doc
