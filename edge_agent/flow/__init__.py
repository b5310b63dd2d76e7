"""The house's energy flow per 15-minute slot: grid ⇄ house ⇄ PV ⇄ battery (docs/energy-flow.md)."""

from edge_agent.flow.component import SPEC, Flow, FlowConfig, FlowDevice

__all__ = ["SPEC", "Flow", "FlowConfig", "FlowDevice"]
