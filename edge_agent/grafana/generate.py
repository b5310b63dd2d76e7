"""Generate the Grafana provisioning files (plain Python, no plugins):
`python -m edge_agent.grafana.generate [--timezone Europe/Berlin] [--currency EUR] [--keep-policy keep] [--out DIR]`.

With the agent's `[retention]` (what Ansible and compose ship) `energy_flow`, `forecast` and `forecast_skill` live in
their own retention policy (`keep`), so the boards read them from `"keep"."<measurement>"`; `--keep-policy ""`
makes boards for a database that keeps everything in its default policy.

Every panel queries InfluxDB with InfluxQL through one datasource uid (`influxdb-energy`). With InfluxDB 2.x the
same dashboards work through its v1 compatibility API (a DBRP mapping for the bucket and a token header), so
there is one set of queries to keep right. The committed JSON is this generator's output for DEFAULT_TIMEZONE (a
test checks); the Ansible grafana role generates them for the house's timezone. Standard library only, so the
Ansible controller can run it with any Python 3.9+.

Slot rules (docs/architecture.md): an `energy_flow` point is a 15-minute slot labelled by its END. So
- a sum over the selected range takes the slots that END in it, after its start and at the latest at its end
  (`time >= from + 1s AND time <= to + 1ms`: Grafana's ranges end at the last millisecond, 23:59:59.999, and
  slot ends are whole quarter hours): "today" does not get yesterday's 23:45-24:00 slot, and gets its own last
  one; the bounds also keep day buckets of the neighbouring days out of the daily panels;
- days are the house's local days (`tz(...)`, DST days have 23 or 25 hours), and a slot belongs to the day it
  ends in: `GROUP BY time(1d, 1s)` starts each day bucket one second after midnight, so the slot ending at 00:00
  counts in the day before, and the bucket's label (00:00:01) still names the right day;
- ratios are ratios of sums, and a day without PV (or without consumption) shows no value rather than InfluxQL's
  0/0 = 0: a subquery keeps only the rows whose denominator is > 0.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

OUT = Path(__file__).resolve().parent / "provisioning"
DEFAULT_TIMEZONE = "Europe/Berlin"  # the seed house; the grafana role passes the house's own (grafana_timezone)
DEFAULT_CURRENCY = "EUR"  # [tariff] currency: the unit of the cost panels
DEFAULT_KEEP_POLICY = "keep"  # [retention] keep_policy: where what lasts is stored (edge_agent/retention/)
KEPT_IN_BOARDS = ("energy_flow", "forecast_skill", "forecast")  # shared.schema.KEPT_MEASUREMENTS the boards read
# Grafana's own currency units; any other ISO 4217 code is shown as a suffix
GRAFANA_CURRENCIES = {"USD", "GBP", "EUR", "JPY", "RUB", "UAH", "BRL", "DKK", "ISK", "NOK", "SEK", "CZK", "CHF", "PLN",
                      "ZAR", "INR", "KRW", "IDR", "PHP", "VND", "TRY", "MYR", "XPF", "BGN", "PYG", "UYU", "ILS"}
DS_UID = "influxdb-energy"
DS = {"type": "influxdb", "uid": DS_UID}
CORE_PANELS = {"timeseries", "stat", "barchart", "canvas", "table", "gauge", "text", "bargauge", "piechart"}
# energy_flow slots that end inside the selected range ($__from/$__to: Grafana's range in epoch ms; docstring)
SLOTS_IN_RANGE = "time >= ${__from}ms + 1s AND time <= ${__to}ms + 1ms"


class Board:
    def __init__(self, uid: str, title: str, tags: list[str], timezone: str,
                 time_range: tuple[str, str] = ("now-7d", "now")):
        self.uid, self.title, self.tags, self.timezone, self.time_range = uid, title, tags, timezone, time_range
        self.panels: list[dict] = []
        self._x = self._y = self._row_h = 0

    def add(self, kind: str, title: str, targets: list[dict], w: int = 12, h: int = 8, **extra) -> dict:
        if self._x + w > 24:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0
        panel = {"id": len(self.panels) + 1, "type": kind, "title": title, "datasource": DS,
                 "gridPos": {"x": self._x, "y": self._y, "w": w, "h": h}, "targets": targets,
                 "options": {}, "fieldConfig": {"defaults": {}, "overrides": []}}
        for key, value in extra.items():
            panel[key] = value
        self._x += w
        self._row_h = max(self._row_h, h)
        self.panels.append(panel)
        return panel

    def to_json(self) -> dict:
        return {"uid": self.uid, "title": self.title, "tags": self.tags, "timezone": self.timezone,
                "schemaVersion": 39, "version": 1, "editable": True, "refresh": "1m",
                "time": {"from": self.time_range[0], "to": self.time_range[1]}, "panels": self.panels,
                "templating": {"list": []}, "annotations": {"list": []}}


def q(query: str, ref: str = "A", fmt: str = "time_series") -> dict:
    """An InfluxQL target in raw query mode."""
    return {"refId": ref, "datasource": DS, "query": query, "rawQuery": True, "resultFormat": fmt}


def kwh(unit: str = "kwatth", decimals: int = 2) -> dict:
    return {"defaults": {"unit": unit, "decimals": decimals}, "overrides": []}


PERCENT = {"defaults": {"unit": "percentunit", "min": 0, "max": 1, "decimals": 1}, "overrides": []}
FLOWS = ("pv_to_house", "pv_to_battery", "pv_to_grid", "grid_to_house", "grid_to_battery", "battery_to_house",
         "battery_to_grid")
CANVAS_FIELDS = (*FLOWS, "battery_to_house_pv", "battery_to_house_grid", "house", "pv", "grid_import",
                 "grid_export", "battery_charge", "battery_discharge", "self_supplied")
# ratio name -> (numerator, denominator): ratios of sums; no value where the denominator is 0
RATIOS = {"self_consumption": ('sum("pv_to_house") + sum("pv_to_battery")', 'sum("pv")'),
          "autarky": ('sum("self_supplied")', 'sum("house")')}


def by_day(tz: str, fill: str = "null") -> str:
    """GROUP BY the house's local day, each slot in the day it ends in (see the module docstring)."""
    return f"GROUP BY time(1d, 1s) fill({fill}) tz('{tz}')"


def ratio_query(name: str, where: str, group: str = "") -> str:
    num, den = RATIOS[name]
    inner = (f'SELECT ({num}) / {den} AS "{name}", {den} AS "denominator" FROM "energy_flow" WHERE {where}'
             + (f" {group}" if group else ""))
    return f'SELECT "{name}" FROM ({inner}) WHERE "denominator" > 0'


def canvas_element(name: str, field: str, x: int, y: int, color: str) -> dict:
    return {"type": "metric-value", "name": name, "config": {"text": {"mode": "field", "field": field,
                                                                       "fixed": ""},
                                                              "size": 20, "color": {"fixed": "#ffffff"},
                                                              "align": "center", "valign": "middle"},
            "background": {"color": {"fixed": color}}, "border": {"color": {"fixed": "dark-green"}},
            "placement": {"top": y, "left": x, "width": 170, "height": 60},
            "constraint": {"horizontal": "left", "vertical": "top"}}


def money(currency: str) -> dict:
    unit = f"currency{currency}" if currency in GRAFANA_CURRENCIES else f"suffix: {currency}"
    return {"defaults": {"unit": unit, "decimals": 2}, "overrides": []}


def energy_flow(tz: str, currency: str = DEFAULT_CURRENCY) -> Board:
    b = Board("home-energy-flow", "Energy flow", ["home-energy"], tz, ("now-6d/d", "now/d"))
    sums = ", ".join(f'sum("{f}") AS "{f}"' for f in CANVAS_FIELDS)
    yellow, blue, purple, green = "#d9a300", "#3274d9", "#8f3bb8", "#37872d"
    elements = [canvas_element("PV", "pv", 20, 20, yellow), canvas_element("House", "house", 400, 160, blue),
                canvas_element("Grid import", "grid_import", 20, 300, purple),
                canvas_element("Grid export", "grid_export", 210, 300, purple),
                canvas_element("Battery charge", "battery_charge", 600, 20, green),
                canvas_element("Battery discharge", "battery_discharge", 600, 300, green),
                canvas_element("PV → house", "pv_to_house", 210, 90, "#5a4a00"),
                canvas_element("PV → battery", "pv_to_battery", 400, 20, "#5a4a00"),
                canvas_element("PV → grid", "pv_to_grid", 20, 160, "#5a4a00"),
                canvas_element("Grid → house", "grid_to_house", 210, 230, "#4a1f60"),
                canvas_element("Grid → battery", "grid_to_battery", 400, 90, "#4a1f60"),
                canvas_element("Battery → house (stored PV)", "battery_to_house_pv", 600, 160, "#1c4a17"),
                canvas_element("Battery → house (stored grid)", "battery_to_house_grid", 600, 230, "#1c4a17"),
                canvas_element("Battery → grid", "battery_to_grid", 400, 300, "#1c4a17")]
    b.add("canvas", "Energy flow (kWh, selected range)",
          [q(f'SELECT {sums} FROM "energy_flow" WHERE {SLOTS_IN_RANGE}', fmt="table")], w=16, h=12,
          options={"inlineEditing": False, "showAdvancedTypes": False,
                   "root": {"type": "frame", "elements": elements, "background": {"color": {"fixed": "transparent"}}}},
          fieldConfig=kwh())
    b.add("stat", "Self-consumption", [q(ratio_query("self_consumption", SLOTS_IN_RANGE), fmt="table")],
          w=4, h=6, fieldConfig=PERCENT,
          description="Share of the PV energy used in the house or stored in the battery. No value without PV.")
    b.add("stat", "Autarky", [q(ratio_query("autarky", SLOTS_IN_RANGE), fmt="table")], w=4, h=6,
          fieldConfig=PERCENT, description="Share of the house's consumption that came from its own PV, directly "
                                           "or through the battery (self_supplied / house).")
    b.add("stat", "House consumption", [q(f'SELECT sum("house") AS "house" FROM "energy_flow" WHERE {SLOTS_IN_RANGE}',
                                          fmt="table")], w=8, h=6, fieldConfig=kwh())
    b.add("barchart", "Daily energy by source (into the house)",
          [q('SELECT sum("pv_to_house") AS "PV", sum("battery_to_house_pv") AS "Battery (stored PV)", '
             'sum("battery_to_house_grid") AS "Battery (stored grid)", sum("grid_to_house") AS "Grid" '
             f'FROM "energy_flow" WHERE {SLOTS_IN_RANGE} {by_day(tz, "0")}', fmt="table")], w=12, h=9,
          options={"stacking": "normal", "xTickLabelRotation": -45}, fieldConfig=kwh())
    b.add("barchart", "Daily energy by sink",
          [q('SELECT sum("house") AS "House", sum("grid_export") AS "Grid export", sum("battery_charge") AS "Battery" '
             f'FROM "energy_flow" WHERE {SLOTS_IN_RANGE} {by_day(tz, "0")}', fmt="table")], w=12, h=9,
          options={"stacking": "normal", "xTickLabelRotation": -45}, fieldConfig=kwh())
    b.add("timeseries", "Flows per 15 minutes",
          [q("SELECT " + ", ".join(f'sum("{f}") AS "{f}"' for f in FLOWS) +
             ' FROM "energy_flow" WHERE $timeFilter GROUP BY time(15m) fill(null)')], w=16, h=9,
          interval="15m", fieldConfig=kwh(decimals=3),
          description="One point per 15-minute slot, at the slot's end.")
    b.add("timeseries", "Self-consumption and autarky per day",
          [q(ratio_query("self_consumption", SLOTS_IN_RANGE, by_day(tz))),
           q(ratio_query("autarky", SLOTS_IN_RANGE, by_day(tz)), ref="B")], w=8, h=9,
          fieldConfig=PERCENT, options={"tooltip": {"mode": "multi"}},
          description="Local days; no value for a day without PV (self-consumption) or consumption (autarky).")
    # what it cost ([tariff]: each slot's grid import × its price − export × the feed-in price, edge_agent/tariff)
    b.add("stat", "Cost (selected range)",
          [q(f'SELECT sum("cost") AS "cost" FROM "energy_flow" WHERE {SLOTS_IN_RANGE}', fmt="table")], w=6, h=9,
          fieldConfig=money(currency),
          description="Grid import × each slot's price − export × the feed-in price, summed over the slots of the "
                      "range (a [tariff] must be configured). Negative: the house earned more than it paid.")
    b.add("timeseries", "Cost per day: actual and said a day ahead",
          [q(f'SELECT sum("cost") AS "actual" FROM "energy_flow" WHERE {SLOTS_IN_RANGE} {by_day(tz)}'),
           q('SELECT sum("cost") AS "forecast" FROM "forecast" WHERE "horizon" = \'96\' AND "issue" = \'day_ahead\' '
             f'AND {SLOTS_IN_RANGE} GROUP BY time(1d, 1s), "name" fill(null) tz(\'{tz}\')', ref="B")], w=18, h=9,
          fieldConfig={**money(currency), "defaults": {**money(currency)["defaults"],
                                                       "custom": {"drawStyle": "bars", "fillOpacity": 60}}},
          description="Local days. Actual: the slots' cost. Forecast: the day-ahead forecast issued once a day × "
                      "the prices known when it was issued, per model (the cost of grid import it expects).")
    return b


def power_by_device(tz: str, currency: str = DEFAULT_CURRENCY) -> Board:
    b = Board("home-energy-power", "Power by device", ["home-energy"], tz)
    b.add("timeseries", "Power by device (W)",
          [q('SELECT mean("Power") FROM "EnergyMeter", "PvString", "Battery" WHERE $timeFilter '
             'GROUP BY time($__interval), "device_id" fill(null)')], w=24, h=10,
          fieldConfig={"defaults": {"unit": "watt"}, "overrides": []})
    b.add("timeseries", "Battery state of charge",
          [q('SELECT mean("Soc") FROM "Battery" WHERE $timeFilter GROUP BY time($__interval), "device_id" '
             'fill(null)')], w=12, h=8, fieldConfig={"defaults": {"unit": "percent", "min": 0, "max": 100},
                                                      "overrides": []})
    b.add("table", "Meter counters (latest, kWh)",
          [q('SELECT last("EnergyIn") AS "EnergyIn", last("EnergyOut") AS "EnergyOut" FROM "EnergyMeter", '
             '"PvString", "Battery" WHERE $timeFilter GROUP BY "device_id"', fmt="table")], w=12, h=8,
          fieldConfig=kwh())
    return b


ACTUAL = 'SELECT sum("house") AS "actual" FROM "energy_flow" WHERE $timeFilter GROUP BY time(15m) fill(null)'
# Next slot: horizon 1 (re-issued every 15 minutes). Day ahead: what was said a day ahead, i.e. the horizon-96
# forecast issued once a day (`issue` = day_ahead); the rolling horizon-96 values were mostly issued minutes before
# their target and would make the day-ahead figures look far better than they are.
FORECAST_KINDS = (("next 15 minutes", "\"horizon\" = '1'"),
                  ("day ahead", "\"horizon\" = '96' AND \"issue\" = 'day_ahead'"))


def forecast_vs_actual(tz: str, currency: str = DEFAULT_CURRENCY) -> Board:
    b = Board("home-energy-forecast", "Forecast vs actual", ["home-energy"], tz, ("now-2d", "now+1d"))
    for label, cond in FORECAST_KINDS:
        b.add("timeseries", f"Forecast {label} vs actual (kWh per 15 min)",
              [q(f'SELECT mean("value_kwh") FROM "forecast" WHERE {cond} AND $timeFilter '
                 'GROUP BY time(15m), "name" fill(null)'), q(ACTUAL, ref="B")], w=12, h=9, interval="15m",
              fieldConfig=kwh(decimals=3))
    for label, cond in FORECAST_KINDS:
        b.add("timeseries", f"Error {label} (forecast − actual, kWh)",
              [q(f'SELECT mean("value_kwh") AS "forecast" FROM "forecast" WHERE {cond} AND '
                 '"model" != \'baseline\' AND $timeFilter GROUP BY time(15m) fill(null)'), q(ACTUAL, ref="B")],
              w=12, h=8, interval="15m", fieldConfig=kwh(decimals=3),
              description="Mean of the learned models' forecasts (baselines excluded) minus the actual consumption.",
              transformations=[{"id": "joinByField", "options": {"mode": "outer"}},
                               {"id": "calculateField", "options": {
                                   "mode": "binary", "alias": "error", "replaceFields": True,
                                   "binary": {"left": "forecast", "operator": "-", "right": "actual"}}}])
    for label, cond in FORECAST_KINDS:  # the band (shared/intervals.py), where the bundles carry one
        b.add("timeseries", f"Band {label}: P10–P90 of the models vs actual (kWh per 15 min)",
              [q(f'SELECT mean("p10_kwh") AS "P10", mean("value_kwh") AS "P50", mean("p90_kwh") AS "P90" '
                 f'FROM "forecast" WHERE {cond} AND "model" != \'baseline\' AND $timeFilter '
                 'GROUP BY time(15m) fill(null)'), q(ACTUAL, ref="B")], w=12, h=8, interval="15m",
              fieldConfig={"defaults": {"unit": "kwatth", "decimals": 3}, "overrides": [
                  {"matcher": {"id": "byName", "options": "P90"},
                   "properties": [{"id": "custom.fillBelowTo", "value": "P10"},
                                  {"id": "custom.fillOpacity", "value": 20}, {"id": "custom.lineWidth", "value": 0}]},
                  {"matcher": {"id": "byName", "options": "P10"},
                   "properties": [{"id": "custom.lineWidth", "value": 0}]}]},
              description="Mean of the learned models' P10, P50 (the forecast) and P90 per slot; about 8 of 10 "
                          "actual values should fall inside the shaded band. Empty for bundles without a band.")
    b.add("table", "Forecasts by model (mean kWh per slot)",
          [q('SELECT mean("value_kwh") AS "mean_kwh", count("value_kwh") AS "slots" FROM "forecast" '
             'WHERE $timeFilter GROUP BY "name", "model", "version", "issue"', fmt="table")], w=24, h=7)
    # live skill (edge_agent/forecast/skill.py): written every cycle, time = the cycle's issue time
    b.add("timeseries", "Live skill vs the best baseline (7 days)",
          [q('SELECT last("skill") AS "skill" FROM "forecast_skill" WHERE "window" = \'7d\' AND '
             '"model" != \'baseline\' AND $timeFilter GROUP BY time(15m), "name", "version" fill(null)')],
          w=12, h=8, interval="15m", fieldConfig={"defaults": {"unit": "percentunit", "max": 1, "decimals": 1},
                                                  "overrides": []},
          description="1 − MAE / MAE of the best naive baseline on the same slots, over the last 7 days, per "
                      "bundle and version: above 0 the model beats every baseline. Next slot: the rolling "
                      "forecasts; day ahead: the forecast issued once a day. The guard serves the baseline for a "
                      "model that stays below 0 (docs/edge-models.md).")
    b.add("table", "Live scores (latest, kWh per slot)",
          [q('SELECT last("mae_kwh") AS "mae_kwh", last("rmse_kwh") AS "rmse_kwh", last("bias_kwh") AS "bias_kwh", '
             'last("slots") AS "slots", last("skill") AS "skill", last("baseline") AS "best_baseline" FROM '
             '"forecast_skill" WHERE "window" != \'slot\' AND $timeFilter GROUP BY "horizon", "window", "name", '
             '"version"', fmt="table")], w=12, h=8,
          description="The newest rolling figures per horizon, window (1d, 7d, 30d), model or baseline and version; "
                      "bias = mean of forecast − actual.")
    return b


def agent_health(tz: str, currency: str = DEFAULT_CURRENCY) -> Board:
    b = Board("home-energy-agent", "Edge agent health", ["home-energy"], tz)
    b.add("timeseries", "Messages per second",
          [q('SELECT non_negative_derivative(last("received"), 1s) AS "received", '
             'non_negative_derivative(last("stored"), 1s) AS "stored points" FROM "agent" WHERE $timeFilter '
             'GROUP BY time($__interval), "host" fill(null)')], w=12, h=8,
          fieldConfig={"defaults": {"unit": "reqps"}, "overrides": []})
    b.add("timeseries", "Spool (bytes waiting for the database)",
          [q('SELECT last("spool_bytes") FROM "agent" WHERE $timeFilter GROUP BY time($__interval), "host" '
             'fill(null)')], w=12, h=8, fieldConfig={"defaults": {"unit": "bytes"}, "overrides": []})
    b.add("stat", "Rejected messages", [q('SELECT last("rejected") FROM "agent" WHERE $timeFilter GROUP BY "host"')],
          w=6, h=5)
    b.add("stat", "Database retries", [q('SELECT last("retries") FROM "agent" WHERE $timeFilter GROUP BY "host"')],
          w=6, h=5)
    b.add("stat", "Forecast cycles", [q('SELECT last("forecast_cycles") FROM "agent" WHERE $timeFilter '
                                        'GROUP BY "host"')], w=6, h=5)
    b.add("stat", "Uptime", [q('SELECT last("uptime_s") FROM "agent" WHERE $timeFilter GROUP BY "host"')], w=6, h=5,
          fieldConfig={"defaults": {"unit": "s"}, "overrides": []})
    b.add("timeseries", "Disk writes per day (the agent's own)",
          [q('SELECT last("bytes_written_per_day") FROM "agent" WHERE $timeFilter GROUP BY time($__interval), '
             '"host" fill(null)')], w=12, h=8, fieldConfig={"defaults": {"unit": "decbytes"}, "overrides": []},
          description="What the agent writes to its disk per day, over the last day (/proc/self/io; its log lines "
                      "are journald's writes). docs/pi.md has the budget of the whole Pi it belongs to.")
    return b


BOARDS = (energy_flow, power_by_device, forecast_vs_actual, agent_health)


def datasource(version: int) -> str:
    """Provisioning for the one InfluxQL datasource: 1.x directly, 2.x through its v1 compatibility API."""
    if version == 1:
        head = "# InfluxDB 1.x (InfluxQL). Installed by the grafana role; credentials come from the environment.\n"
        auth = ("    basicAuth: false\n    user: ${INFLUXDB_USER}\n    secureJsonData:\n"
                "      password: ${INFLUXDB_PASSWORD}\n")
        extra = ""
    else:
        head = ("# InfluxDB 2.x through its v1 compatibility API (InfluxQL): the same dashboards as 1.x.\n"
                "# Needs a DBRP mapping database \"energy\" -> the bucket (the influxdb role creates it) and a read token.\n")
        auth = "    secureJsonData:\n      httpHeaderValue1: Token ${INFLUXDB_TOKEN}\n"
        extra = "      httpHeaderName1: Authorization\n"
    return (f"{head}apiVersion: 1\ndatasources:\n  - name: InfluxDB energy\n    uid: {DS_UID}\n    type: influxdb\n"
            f"    access: proxy\n    url: ${{INFLUXDB_URL}}\n    jsonData:\n      dbName: energy\n      httpMode: POST\n"
            f"{extra}{auth}    isDefault: true\n    editable: false\n")


DASHBOARD_PROVIDER = """apiVersion: 1
providers:
  - name: home-energy
    folder: Home energy
    type: file
    disableDeletion: true
    allowUiUpdates: false
    options:
      path: /etc/grafana/provisioning/dashboards/home-energy
"""


def check_timezone(tz: str) -> str:
    """An IANA zone name (what InfluxQL's tz() and Grafana accept), or ValueError naming the option."""
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"--timezone {tz!r}: not an IANA time zone name such as Europe/Berlin") from exc
    if "'" in tz or "\\" in tz:
        raise ValueError(f"--timezone {tz!r}: not an IANA time zone name such as Europe/Berlin")
    return tz


def check_currency(code: str) -> str:
    if not (len(code) == 3 and code.isalpha() and code.isupper()):
        raise ValueError(f"--currency {code!r}: a three-letter ISO 4217 code such as EUR ([tariff] currency)")
    return code


def from_policy(board: dict, keep_policy: str) -> dict:
    """Every query's kept measurements read from their retention policy (module docstring)."""
    if not keep_policy:
        return board
    pattern = re.compile(r'FROM "(' + "|".join(KEPT_IN_BOARDS) + r')"')
    for panel in board["panels"]:
        for target in panel["targets"]:
            target["query"] = pattern.sub(lambda m: f'FROM "{keep_policy}"."{m.group(1)}"', target["query"])
    return board


def check_policy(name: str) -> str:
    if name and not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"--keep-policy {name!r}: letters, digits, _ . - only ([retention] keep_policy)")
    return name


def files(timezone: str = DEFAULT_TIMEZONE, currency: str = DEFAULT_CURRENCY,
          keep_policy: str = DEFAULT_KEEP_POLICY) -> dict[str, str]:
    tz = check_timezone(timezone)
    currency = check_currency(currency)
    keep_policy = check_policy(keep_policy)
    out = {"datasources/influxdb-v1.yaml": datasource(1), "datasources/influxdb-v2.yaml": datasource(2),
           "dashboards/home-energy.yaml": DASHBOARD_PROVIDER}
    for make in BOARDS:
        board = make(tz, currency)
        doc = from_policy(board.to_json(), keep_policy)
        out[f"dashboards/home-energy/{board.uid}.json"] = json.dumps(doc, indent=2) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge_agent.grafana.generate", description=__doc__.split("\n")[0])
    ap.add_argument("--timezone", default=DEFAULT_TIMEZONE,
                    help=f"the house's IANA time zone: days in the daily panels and the boards' clock "
                         f"(default {DEFAULT_TIMEZONE}, what the committed files use)")
    ap.add_argument("--currency", default=DEFAULT_CURRENCY,
                    help=f"the [tariff] currency: the unit of the cost panels (default {DEFAULT_CURRENCY})")
    ap.add_argument("--keep-policy", default=DEFAULT_KEEP_POLICY,
                    help=f"the agent's [retention] keep_policy, where the flow, forecasts and skill are stored "
                         f"(default {DEFAULT_KEEP_POLICY}; \"\" without [retention])")
    ap.add_argument("--out", type=Path, default=OUT, help="provisioning directory to write (default: %(default)s)")
    args = ap.parse_args(argv)
    try:
        generated = files(args.timezone, args.currency, args.keep_policy)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for rel, text in generated.items():
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
