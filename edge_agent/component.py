"""The component contract: what a stage of the agent (flow, forecast, model API) is given and must provide.

A component package exposes one `SPEC = ComponentSpec(name, parse, build)`:
- `name` is its config section (`[flow]`) and its key in `Agent.components`;
- `parse(config) -> Config | None` validates that section into the component's Config dataclass (None: absent
  or `enabled = false`) and raises ConfigError naming the key — `edge-agent check` calls it without building;
- `build(cfg, ctx) -> Component` makes the component; `start()`/`stop()` run it.
The agent lists its components explicitly (edge_agent/agent.py), no module names or getattr.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from edge_agent.config import AgentConfig
from edge_agent.runtime.health import Health
from edge_agent.runtime.timer import SlotTimer
from shared.storage import Storage

if TYPE_CHECKING:
    from edge_agent.models.active import ActiveModels

C = TypeVar("C")


class Component(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class ComponentSpec(Generic[C]):
    name: str
    parse: Callable[[AgentConfig], C | None]
    build: Callable[[C, AgentContext], Component]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class AgentContext:
    """What the agent gives its components."""

    config: AgentConfig
    health: Health
    publish: Callable[..., None]  # publish(topic, payload, qos=1, retain=False) on the agent's own connection
    open_storage: Callable[[], Storage]  # a Storage (connection) of the caller's own
    timer: SlotTimer  # the one slot clock: add(name, delay_s, run), trigger(name, after_s, boundary)
    clock: Callable[[], datetime] = utc_now  # aware UTC datetimes; tests drive it
    components: dict[str, Component] = field(default_factory=dict)
    stored_listeners: list[Callable[[list[bytes]], None]] = field(default_factory=list)
    # parts of the status API beyond the models' (name -> a callable giving it): problems, backup, retention
    status_parts: dict[str, Callable[[], Any]] = field(default_factory=dict)
    # commit what ingest holds in its current group now (before reading the database); True when done
    flush_ingest: Callable[..., bool] = lambda timeout=10.0: True
    _models: ActiveModels | None = None
    _models_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    @property
    def topic_prefix(self) -> str:
        return self.config.publish.topic_prefix

    def on_stored(self, listener: Callable[[list[bytes]], None]) -> None:
        """Call `listener(lines)` with the line-protocol lines of each batch that reached the database
        (the flow and the forecast find out-of-order readings this way)."""
        self.stored_listeners.append(listener)

    def models(self) -> ActiveModels:
        """The one owner of the loaded models, shared by the forecast loop and the model API (made on first use:
        an ingest-only agent never loads an interpreter)."""
        with self._models_lock:
            if self._models is None:
                from edge_agent.models.active import ActiveModels

                self._models = ActiveModels(self.config.resolve(models_dir(self.config)), self.health)
            return self._models


def models_dir(config: AgentConfig) -> str:
    """Where the model store lives (under state_dir): `[forecast] models_dir`, default `models`."""
    value: Any = config.section("forecast").get("models_dir", "models")
    return value if isinstance(value, str) and value else "models"
