"""What the house's page shows, prepared for its template: each model version with a verdict in words against the
best simple guess (shared.verdict), the live figures with the guard's "learning: 120 of 300 slots scored, about 2
days left", the validation charts to show (the active versions' by default), and the homeowner's view
(server/home.py) with its charts — every time in the house's zone (server/timefmt.py)."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

from server import home, plots, timefmt
from server.pull import DEFAULT_SERIES, open_node_storage, safe_errors
from shared import verdict as words
from shared.schema import BUNDLE_NAMES

THRESHOLDS = {"about_same_pct": round(100 * words.ABOUT_SAME)}
VERDICT_CLASS = {words.BETTER: "ok", words.SAME: "same", words.WORSE: "bad"}


def _best_baseline(val: dict) -> tuple[str, float] | None:
    bases = [(b["mae"], n) for n, b in (val.get("baselines") or {}).items() if b.get("mae")]
    return (min(bases)[1], min(bases)[0]) if bases else None


def version_row(v: dict, tz: ZoneInfo) -> dict:
    """A registry row with its verdict: int8 MAE ÷ the best baseline's MAE on the validation windows (`ratio`,
    lower is better), better / about the same / worse, and its validation period in the house's zone."""
    val = (v.get("metrics") or {}).get("validation") or {}
    best = _best_baseline(val)
    mae = (val.get("int8") or {}).get("mae")
    ratio = mae / best[1] if best and mae is not None else None
    verdict = words.verdict(ratio)
    data = v.get("data") or {}
    return v | {"best": best[0] if best else None, "best_words": words.baseline_words(best[0]) if best else "—",
                "best_mae": best[1] if best else None, "ratio": ratio, "verdict": verdict,
                "cls": VERDICT_CLASS.get(verdict, ""), "words": words.in_words(ratio, best[0] if best else None),
                "period": (timefmt.fmt(data.get("validation_start"), tz), timefmt.fmt(data.get("end"), tz))}


def quick_runs(db, runs: dict[str, list[dict]]) -> dict[str, bool]:
    """Per training run: a quick one? From the manifest (`training.quick`), else from the job that trained it."""
    out = {}
    for version, rows in runs.items():
        known = [r["quick"] for r in rows if r.get("quick") is not None]
        if known:
            out[version] = bool(known[0])
            continue
        job = db.job(rows[0]["job_id"]) if rows[0].get("job_id") else None
        out[version] = bool(json.loads(job["params"]).get("quick")) if job else False
    return out


def live_rows(rows: list[dict], status: dict) -> list[dict]:
    """The live-skill rows with the verdict in words: the live 7-day skill against the best baseline, or while the
    guard is still learning, how far it is ("learning: 120 of 300 slots scored, about 2 days left")."""
    out = []
    for r in rows:
        live, guard = r.get("live") or {}, r.get("guard") or {}
        skill = live.get("skill")
        said = words.in_words(words.ratio_of_skill(skill), live.get("baseline"))
        learning = words.learning(guard.get("slots"), guard.get("min_slots")) \
            if guard.get("state") == "learning" else None
        summary = learning or said or ("not scored yet" if r.get("version") else "no model")
        out.append(r | {"summary": summary, "learning": learning,
                        "cls": VERDICT_CLASS.get(words.verdict(words.ratio_of_skill(skill)), "")})
    return out


def validation_plots(registry, owner: str, models: dict, runs: dict[str, list[dict]], run: str,
                     quick: dict[str, bool], tz: ZoneInfo) -> list[dict]:
    """The validation charts to show: `run`'s (a version of this house), else per bundle the active version's
    (found by its sha256: a seeded one is another owner's), else the newest run's. Each with its validation period
    and whether it came from a quick or a full training."""
    rows = []
    if run and run in runs:
        rows = [registry.get(owner, r["name"], run) for r in runs[run]]
    else:
        newest = next(iter(runs.values()), [])
        for name in BUNDLE_NAMES:
            active = (models.get(name) or {}).get("active")
            row = registry.by_sha(name, active["sha256"]) if active else None
            if row is None:
                row = next((registry.get(owner, r["name"], r["version"]) for r in newest if r["name"] == name), None)
            rows.append(row)
    out = []
    for row in rows:
        if row is None or not row.get("plot"):
            continue
        fig = row["plot"]
        data = row.get("data") or {}
        is_quick = quick.get(row["version"]) if row["owner"] == owner else bool(row.get("quick"))
        active = (models.get(row["name"]) or {}).get("active") or {}
        out.append({"name": row["name"], "version": row["version"], "quick": bool(is_quick),
                    "active": active.get("sha256") == row["sha256"],
                    "svg": fig if fig.startswith("<svg") else None,
                    "figure": None if fig.startswith("<svg") else plots.localize(fig, tz),
                    "period": (timefmt.fmt(data.get("validation_start"), tz), timefmt.fmt(data.get("end"), tz))})
    return out


def _serving_day_ahead(status: dict) -> str | None:
    return (((status.get("guard") or {}).get("serving") or {}).get("96") or {}).get("name")


def home_view(row: dict, influx: dict, now: datetime) -> dict:
    """The homeowner's view of a node: figures for the template `home.html` and its two charts."""
    from server import nodes

    status = nodes.public(row)["status"] or {}
    tz = timefmt.house_tz(status)
    st = safe_errors(influx["url"], open_node_storage, influx)
    try:
        energy = safe_errors(influx["url"], home.energy, st, tz, now)
        ahead = safe_errors(influx["url"], home.next_day, st, influx, now, _serving_day_ahead(status), DEFAULT_SERIES)
    finally:
        st.close()
    fields = ["house", "grid_import"] + (["grid_export"] if energy["has_export"] else []) + \
        (["pv"] if energy["has_pv"] else []) + \
        (["battery_charge", "battery_discharge"] if energy["has_battery"] else [])
    latest = ahead["latest"]
    next_kwh = float(latest.value.sum()) if latest is not None else None
    return {"tz": tz, "energy": energy, "fields": fields, "labels": plots.ENERGY_LABELS,
            "today": energy["today"], "days": energy["days"], "now": timefmt.fmt(now, tz),
            "newest_slot": timefmt.fmt(energy["newest_slot"] / 1e9, tz) if energy["newest_slot"] else None,
            "next_kwh": next_kwh, "forecast_name": latest.name if latest is not None else None,
            "said": ahead["said"] is not None,
            "energy_fig": plots.energy_days(energy["days"] + [energy["today"] | {"date": "today"}], fields, tz,
                                            "Energy per day (kWh)"),
            "forecast_fig": plots.next_day(ahead, tz, "Consumption: the last 24 h and the next 24 h")}
