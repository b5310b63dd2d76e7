"""Old import path, kept for scripts that import it: the app factory is `server.create_app`, the shared state
`server.state`."""

from server import create_app
from server.state import State, build_state, start_worker_thread

__all__ = ["State", "build_state", "create_app", "start_worker_thread"]
