"""The web dashboard, served by the API process at ``/ui/`` (see `cronhive.api.ui.views`)."""

from __future__ import annotations

from flask import Flask

from cronhive.api.ui.security import SessionKeys
from cronhive.api.ui.views import UiState, ui_bp


def register_ui(app: Flask) -> None:
    """Mount the dashboard on ``app`` (after the app's services exist)."""
    services = app.extensions["cronhive"]
    app.extensions["cronhive_ui"] = UiState(SessionKeys(services.settings, services.store))
    app.register_blueprint(ui_bp)


__all__ = ["register_ui"]
