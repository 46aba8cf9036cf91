"""The REST API process: a Flask app factory over `shared/`."""

from cronhive.api.app import create_app

__all__ = ["create_app"]
