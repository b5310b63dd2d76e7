"""What the energy costs: the `[tariff]` section (flat, time-of-use or dynamic prices, feed-in), cost per slot."""

from edge_agent.tariff.component import SPEC, Tariff
from edge_agent.tariff.prices import TariffConfig

__all__ = ["SPEC", "Tariff", "TariffConfig"]
