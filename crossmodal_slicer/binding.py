"""A panel's widgets bound to its parameter node: one wrapper and one GUI connection per parameter node."""

from __future__ import annotations

from collections.abc import Callable


class ParameterNodeBinding:
    """Keeps one ``parameterNodeWrapper`` connected to a panel's ``.ui`` for as long as the parameter node lasts.

    Slicer's template connects on every ``enter()`` and disconnects on ``exit()``, but Slicer 5.10's
    ``disconnectGui`` leaves its ModifiedEvent observer (holding the wrapper) on the node, so each visit of
    the module would leave one more wrapper behind. Connecting once per parameter node behaves the same on
    every release. ``connected`` runs after each connection: Slicer's GUI connectors reset what they set
    up (a spin box's range to its ``WithinRange``) whenever they connect, and the panel restores its own.
    """

    def __init__(self, ui, connected: Callable[[], None] | None = None) -> None:
        self.ui = ui
        self.connected = connected
        self.parameters = None
        self._tag = None

    def bind(self, parameters) -> None:
        """Connect ``parameters`` (a wrapper, or ``None`` to let go) unless it wraps the node already bound."""
        if parameters is not None and self.parameters is not None and parameters.parameterNode is self.parameters.parameterNode:
            return
        if self.parameters is not None:
            self.parameters.disconnectGui(self._tag)
        self.parameters, self._tag = parameters, None
        if parameters is not None:
            self._tag = parameters.connectGui(self.ui)
            if self.connected is not None:
                self.connected()
