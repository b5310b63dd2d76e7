"""Prices per slot (edge_agent/tariff/prices.py): time-of-use periods, the dynamic lists HA integrations publish,
and configuration errors that name the key."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from edge_agent.config import ConfigError, load_config
from edge_agent.tariff.component import parse_config
from edge_agent.tariff.prices import TariffConfig, check, configured_price, parse_dynamic
from tests.helpers.agent import write_config

BERLIN = ZoneInfo("Europe/Berlin")


def ns(local: str) -> int:
    return int(datetime.fromisoformat(local).replace(tzinfo=BERLIN).timestamp()) * 10**9


def test_time_of_use_periods_by_slot_start_and_weekday():
    tc = check(TariffConfig(price=0.30, feed_in=0.08, timezone="Europe/Berlin", periods=[
        {"from": "22:00", "to": "06:00", "price": 0.20},
        {"from": "06:00", "to": "22:00", "price": 0.25, "days": ["sat", "sun"]}]), "[tariff]", "UTC")
    # Tuesday 12 March 2024: the slot ending at 06:00 started at 05:45, in the night period; the next one is day
    assert configured_price(tc, ns("2024-03-12T06:00")) == 0.20
    assert configured_price(tc, ns("2024-03-12T06:15")) == 0.30  # a weekday: no period, the flat price
    assert configured_price(tc, ns("2024-03-12T22:00")) == 0.30  # started at 21:45
    assert configured_price(tc, ns("2024-03-12T22:15")) == 0.20
    assert configured_price(tc, ns("2024-03-16T12:00")) == 0.25  # Saturday
    # 31 March 2024 (23 hours): local times, not UTC offsets
    assert configured_price(tc, ns("2024-03-31T06:15")) == 0.25 and configured_price(tc, ns("2024-03-31T03:15")) == 0.20


def test_dynamic_lists_as_home_assistant_integrations_give_them():
    # Nord Pool (custom integration attributes raw_today/raw_tomorrow, local offsets, EUR/MWh → EUR/kWh + fees)
    nordpool = {"raw_today": [{"start": "2024-03-12T00:00:00+01:00", "end": "2024-03-12T01:00:00+01:00",
                               "value": 80.5}, {"start": "2024-03-12T01:00:00+01:00",
                                                "end": "2024-03-12T02:00:00+01:00", "value": 95.0}],
                "raw_tomorrow": []}
    prices = parse_dynamic(json.dumps(nordpool), scale=0.001, add=0.15)
    assert len(prices) == 8  # two hours, four slots each
    assert prices[ns("2024-03-12T00:15")] == pytest.approx(0.2305) and prices[ns("2024-03-12T01:00")] == 0.2305
    assert prices[ns("2024-03-12T01:15")] == pytest.approx(0.245)
    # ENTSO-E (prices with a time and no end: each lasts until the next; the last as long as the one before)
    entsoe = {"prices": [{"time": "2024-03-12T10:00:00+00:00", "price": 0.11},
                         {"time": "2024-03-12T10:15:00+00:00", "price": 0.12}]}
    prices = parse_dynamic(json.dumps(entsoe))
    assert sorted(prices.values()) == [0.11, 0.12] and len(prices) == 2
    # Tibber's tibber.get_prices response, per home, and a plain list with epoch seconds
    tibber = {"prices": {"Home": [{"start_time": "2024-03-12T00:00:00.000+01:00", "price": 0.3012}]}}
    assert set(parse_dynamic(json.dumps(tibber)).values()) == {0.3012}
    assert len(parse_dynamic(json.dumps([{"start": 1710201600, "price": "0.25"}]))) == 4  # an hour alone
    for bad, why in (("not json", "not JSON"), ("[1, 2]", "no list"), ('[{"start": "2024-03-12T00:07:00Z", '
                     '"price": 1}]', "whole 15-minute"), ('[{"start": "2024-03-12T00:00:00Z"}]', "no price"),
                     ('[{"start": "yesterday", "price": 1}]', "RFC 3339"), ('[{"start": 0, "price": "x"}]',
                                                                            "not a number")):
        with pytest.raises(ValueError, match=why):
            parse_dynamic(bad)


@pytest.mark.parametrize("section, error", [
    ('currency = "euro"\nprice = 0.3', r"\[tariff\]\.currency"),
    ("feed_in = 0.08", r"\[tariff\] needs a price"),
    ('price = 0.3\ntimezone = "Mars/Base"', r"\[tariff\]\.timezone"),
    ('periods = [{ from = "22:00", to = "06:10", price = 0.2 }]', r"periods\[0\]\.to"),
    ('periods = [{ from = "22:00", to = "06:00" }]', r"periods\[0\]\.price"),
    ('periods = [{ from = "22:00", to = "06:00", price = 0.2, days = ["monday"] }]', r"periods\[0\]\.days"),
    ('prices_topic = "prices/#"', r"\[tariff\]\.prices_topic"),
    ("price = 0.3\nvat = 0.19", r"unknown key\(s\) vat"),
])
def test_configuration_errors_name_the_key(tmp_path, section, error):
    cfg = load_config(write_config(tmp_path, 1883, "http://127.0.0.1:8086", "energy", extra=f"[tariff]\n{section}\n"))
    with pytest.raises(ConfigError, match=error):
        parse_config(cfg)


def test_timezone_defaults_to_the_forecasts(tmp_path):
    cfg = load_config(write_config(tmp_path, 1883, "http://127.0.0.1:8086", "energy",
                                   extra='[forecast]\ntimezone = "Europe/Zurich"\n[tariff]\nprice = 0.3\n'))
    assert parse_config(cfg).timezone == "Europe/Zurich"
