"""Generate the Grafana provisioning files (plain Python, no plugins): `python -m edge_agent.grafana.generate`.

Every panel queries InfluxDB with InfluxQL through one datasource uid (`influxdb-energy`). With InfluxDB 2.x the
same dashboards work through its v1 compatibility API (a DBRP mapping for the bucket and a token header), so
there is one set of queries to keep right. The committed JSON must equal this generator's output (a test checks).
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "provisioning"
DS_UID = "influxdb-energy"
DS = {"type": "influxdb", "uid": DS_UID}
CORE_PANELS = {"timeseries", "stat", "barchart", "canvas", "table", "gauge", "text", "bargauge", "piechart"}


class Board:
    def __init__(self, uid: str, title: str, tags: list[str]):
        self.uid, self.title, self.tags = uid, title, tags
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
        return {"uid": self.uid, "title": self.title, "tags": self.tags, "timezone": "browser",
                "schemaVersion": 39, "version": 1, "editable": True, "refresh": "1m",
                "time": {"from": "now-7d", "to": "now"}, "panels": self.panels,
                "templating": {"list": []}, "annotations": {"list": []}}


def q(query: str, ref: str = "A", fmt: str = "time_series") -> dict:
    """An InfluxQL target in raw query mode."""
    return {"refId": ref, "datasource": DS, "query": query, "rawQuery": True, "resultFormat": fmt}


def kwh(unit: str = "kwatth", decimals: int = 2) -> dict:
    return {"defaults": {"unit": unit, "decimals": decimals}, "overrides": []}


FLOWS = ("pv_to_house", "pv_to_battery", "pv_to_grid", "grid_to_house", "grid_to_battery", "battery_to_house")


def canvas_element(name: str, field: str, x: int, y: int, color: str) -> dict:
    return {"type": "metric-value", "name": name, "config": {"text": {"mode": "field", "field": field,
                                                                       "fixed": ""},
                                                              "size": 20, "color": {"fixed": "#ffffff"},
                                                              "align": "center", "valign": "middle"},
            "background": {"color": {"fixed": color}}, "border": {"color": {"fixed": "dark-green"}},
            "placement": {"top": y, "left": x, "width": 170, "height": 60},
            "constraint": {"horizontal": "left", "vertical": "top"}}


def energy_flow() -> Board:
    b = Board("home-energy-flow", "Energy flow", ["home-energy"])
    last = ", ".join(f'sum("{f}") AS "{f}"' for f in (*FLOWS, "house", "pv", "grid_import", "grid_export",
                                                        "battery_charge", "battery_discharge"))
    elements = [canvas_element("PV", "pv", 20, 20, "#d9a300"), canvas_element("House", "house", 400, 160, "#3274d9"),
                canvas_element("Grid import", "grid_import", 20, 300, "#8f3bb8"),
                canvas_element("Grid export", "grid_export", 210, 300, "#8f3bb8"),
                canvas_element("Battery charge", "battery_charge", 600, 20, "#37872d"),
                canvas_element("Battery discharge", "battery_discharge", 600, 300, "#37872d"),
                canvas_element("PV → house", "pv_to_house", 210, 90, "#5a4a00"),
                canvas_element("Grid → house", "grid_to_house", 210, 230, "#4a1f60"),
                canvas_element("Battery → house", "battery_to_house", 600, 160, "#1c4a17")]
    b.add("canvas", "Energy flow (kWh, selected range)", [q(f"SELECT {last} FROM \"energy_flow\" WHERE $timeFilter",
                                                           fmt="table")], w=16, h=12,
          options={"inlineEditing": False, "showAdvancedTypes": False,
                   "root": {"type": "frame", "elements": elements, "background": {"color": {"fixed": "transparent"}}}},
          fieldConfig=kwh())
    b.add("stat", "Self-consumption", [q('SELECT (sum("pv_to_house") + sum("pv_to_battery")) / sum("pv") '
                                         'AS "self_consumption" FROM "energy_flow" WHERE $timeFilter', fmt="table")],
          w=4, h=6, fieldConfig={"defaults": {"unit": "percentunit", "min": 0, "max": 1}, "overrides": []})
    b.add("stat", "Autarky", [q('SELECT (sum("house") - sum("grid_to_house")) / sum("house") AS "autarky" '
                                'FROM "energy_flow" WHERE $timeFilter', fmt="table")],
          w=4, h=6, fieldConfig={"defaults": {"unit": "percentunit", "min": 0, "max": 1}, "overrides": []})
    b.add("stat", "House consumption", [q('SELECT sum("house") AS "house" FROM "energy_flow" WHERE $timeFilter',
                                          fmt="table")], w=8, h=6, fieldConfig=kwh())
    b.add("barchart", "Daily energy by source (into the house)",
          [q('SELECT sum("pv_to_house") AS "PV", sum("battery_to_house") AS "Battery", sum("grid_to_house") AS "Grid" '
             'FROM "energy_flow" WHERE $timeFilter GROUP BY time(1d) fill(0)', fmt="table")], w=12, h=9,
          options={"stacking": "normal", "xTickLabelRotation": -45}, fieldConfig=kwh())
    b.add("barchart", "Daily energy by sink",
          [q('SELECT sum("house") AS "House", sum("grid_export") AS "Grid export", sum("battery_charge") AS "Battery" '
             'FROM "energy_flow" WHERE $timeFilter GROUP BY time(1d) fill(0)', fmt="table")], w=12, h=9,
          options={"stacking": "normal", "xTickLabelRotation": -45}, fieldConfig=kwh())
    b.add("timeseries", "Flows per 15 minutes",
          [q("SELECT " + ", ".join(f'sum("{f}") AS "{f}"' for f in FLOWS) +
             ' FROM "energy_flow" WHERE $timeFilter GROUP BY time($__interval) fill(null)')], w=16, h=9,
          fieldConfig=kwh())
    b.add("timeseries", "Self-consumption and autarky per day",
          [q('SELECT (sum("pv_to_house") + sum("pv_to_battery")) / sum("pv") AS "self_consumption", '
             '(sum("house") - sum("grid_to_house")) / sum("house") AS "autarky" FROM "energy_flow" '
             'WHERE $timeFilter GROUP BY time(1d) fill(null)')], w=8, h=9,
          fieldConfig={"defaults": {"unit": "percentunit", "min": 0, "max": 1}, "overrides": []})
    return b


def power_by_device() -> Board:
    b = Board("home-energy-power", "Power by device", ["home-energy"])
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


def forecast_vs_actual() -> Board:
    b = Board("home-energy-forecast", "Forecast vs actual", ["home-energy"])
    for horizon, label in (("1", "next 15 minutes"), ("96", "day ahead")):
        b.add("timeseries", f"Forecast {label} vs actual (kWh per 15 min)",
              [q(f'SELECT mean("value_kwh") FROM "forecast" WHERE "horizon" = \'{horizon}\' AND $timeFilter '
                 'GROUP BY time(15m), "name" fill(null)'),
               q('SELECT sum("house") AS "actual" FROM "energy_flow" WHERE $timeFilter GROUP BY time(15m) fill(null)',
                 ref="B")], w=12, h=9, fieldConfig=kwh(decimals=3))
    for horizon, label in (("1", "next 15 minutes"), ("96", "day ahead")):
        b.add("timeseries", f"Error {label} (forecast − actual, kWh)",
              [q(f'SELECT mean("value_kwh") AS "forecast" FROM "forecast" WHERE "horizon" = \'{horizon}\' AND '
                 '"model" != \'baseline\' AND $timeFilter GROUP BY time(15m) fill(null)'),
               q('SELECT sum("house") AS "actual" FROM "energy_flow" WHERE $timeFilter GROUP BY time(15m) fill(null)',
                 ref="B")], w=12, h=8, fieldConfig=kwh(decimals=3),
              transformations=[{"id": "joinByField", "options": {"mode": "outer"}},
                               {"id": "calculateField", "options": {
                                   "mode": "binary", "alias": "error", "replaceFields": True,
                                   "binary": {"left": "forecast", "operator": "-", "right": "actual"}}}])
    b.add("table", "Forecasts by model (mean kWh per slot)",
          [q('SELECT mean("value_kwh") AS "mean_kwh", count("value_kwh") AS "slots" FROM "forecast" '
             'WHERE $timeFilter GROUP BY "name", "model", "version"', fmt="table")], w=24, h=7)
    return b


def agent_health() -> Board:
    b = Board("home-energy-agent", "Edge agent health", ["home-energy"])
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


def files() -> dict[str, str]:
    out = {"datasources/influxdb-v1.yaml": datasource(1), "datasources/influxdb-v2.yaml": datasource(2),
           "dashboards/home-energy.yaml": DASHBOARD_PROVIDER}
    for make in BOARDS:
        board = make()
        out[f"dashboards/home-energy/{board.uid}.json"] = json.dumps(board.to_json(), indent=2) + "\n"
    return out


def main() -> None:
    for rel, text in files().items():
        path = OUT / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path)


if __name__ == "__main__":
    main()
