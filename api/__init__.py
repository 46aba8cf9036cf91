"""The REST API process: a Flask app factory over `shared/`."""

from api.app import create_app

__all__ = ["create_app"]
