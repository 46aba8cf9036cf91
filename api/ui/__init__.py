"""The web dashboard, served by the API process at ``/ui/`` (see `cronhive.api.ui.views`)."""

from __future__ import annotations

from flask import Flask, redirect
from werkzeug.wrappers import Response

from cronhive.api.ui.security import SessionKeys
from cronhive.api.ui.views import UiState, ui_bp


def register_ui(app: Flask) -> None:
    """Mount the dashboard on ``app`` (after the app's services exist); ``/`` leads to it."""
    services = app.extensions["cronhive"]
    app.extensions["cronhive_ui"] = UiState(SessionKeys(services.settings, services.store))
    app.register_blueprint(ui_bp)

    def root() -> Response:
        return redirect("/ui/", code=302)

    app.add_url_rule("/", "root", root, methods=["GET"])


__all__ = ["register_ui"]
