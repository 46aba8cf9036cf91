"""The job form: from the browser's fields to the API's JSON body, and back.

The form posts text; `payload_from_form` turns it into exactly the body a REST
client would send (integers as numbers, ``args`` parsed from JSON, a checkbox as
a boolean, blank optional fields left out so the API's defaults apply), and
the API's marshmallow schema then validates it: the errors the form shows are
the API's 422 ``details``, field by field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from werkzeug.datastructures import MultiDict

from cronhive.api.routes import JsonRefused, load_json_text
from cronhive.domain import DEFAULT_POLICIES, MISFIRE_POLICIES, OVERLAP_POLICIES

TEXT_FIELDS = ("name", "schedule", "timezone", "handler", "misfire_policy", "overlap_policy")
INT_FIELDS = ("misfire_grace_s", "jitter_s", "timeout_s", "max_retries")
_INTEGER = re.compile(r"-?[0-9]{1,19}")


@dataclass
class JobForm:
    """The values the form shows, and the errors by field (the API's 422 ``details``)."""

    values: dict[str, Any]
    errors: dict[str, list[str]] = field(default_factory=dict)
    creating: bool = True

    def error(self, name: str) -> list[str]:
        return self.errors.get(name, [])


def parse_args(text: str) -> tuple[Any, str | None]:
    """The ``args`` textarea as JSON (blank = ``{}``), or the reason it is not JSON."""
    if not text.strip():
        return {}, None
    try:
        return load_json_text(text), None
    except JsonRefused as exc:
        return None, f"{str(exc)[0].upper()}{str(exc)[1:]}."[:300]


def flatten_errors(messages: Any) -> dict[str, list[str]]:
    """marshmallow's messages (``{field: [text]}``, nested for ``args``) as text per field."""
    if not isinstance(messages, dict):
        return {"_schema": [str(messages)]}
    flat: dict[str, list[str]] = {}
    for name, value in messages.items():
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            flat[str(name)] = list(value)
        elif isinstance(value, dict):
            flat[str(name)] = [f"{key}: {text}" for key, texts in value.items()
                               for text in (texts if isinstance(texts, list) else [texts])]
        else:
            flat[str(name)] = [str(value)]
    return flat


def payload_from_form(form: MultiDict[str, str], creating: bool) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The API body the form describes, and the problems found before the schema runs
    (``args`` that is not JSON)."""
    payload: dict[str, Any] = {}
    problems: dict[str, list[str]] = {}
    if creating and form.get("job_id", "").strip():
        payload["job_id"] = form["job_id"].strip()
    for name in TEXT_FIELDS:
        value = form.get(name, "").strip()
        if value or (name == "name" and not creating and name in form):
            payload[name] = value
    for name in INT_FIELDS:
        value = form.get(name, "").strip()
        if value:
            payload[name] = int(value) if _INTEGER.fullmatch(value) else value
    if "enabled_shown" in form:
        payload["enabled"] = form.get("enabled") == "on"
    args, problem = parse_args(form.get("args", ""))
    if problem:
        problems["args"] = [problem]
    elif args != {} or not creating:
        payload["args"] = args
    return payload, problems


def blank_form(handlers: list[str]) -> JobForm:
    values: dict[str, Any] = {"name": "", "job_id": "", "schedule": "", "timezone": "UTC",
                              "handler": "noop" if "noop" in handlers else (handlers[0] if handlers else ""),
                              "enabled": True, "args": "{}", **DEFAULT_POLICIES}
    return JobForm(values=values, creating=True)


def form_of_job(job: dict[str, Any]) -> JobForm:
    """The edit form, filled from a job view."""
    values = {key: job.get(key) for key in ("job_id", "name", "schedule", "timezone", "handler", "enabled",
                                            *DEFAULT_POLICIES)}
    for key in ("name", "schedule", "timezone", "handler"):  # an invalid job's missing field: an empty box
        if values[key] is None:
            values[key] = ""
    values["args"] = json.dumps(job.get("args") or {}, indent=2, ensure_ascii=False)
    return JobForm(values=values, creating=False)


def form_from_post(form: MultiDict[str, str], creating: bool, errors: dict[str, list[str]]) -> JobForm:
    """The form as the user sent it, with errors (so nothing typed is lost)."""
    values: dict[str, Any] = {name: form.get(name, "") for name in ("job_id", *TEXT_FIELDS, *INT_FIELDS, "args")}
    values["enabled"] = form.get("enabled") == "on"
    return JobForm(values=values, errors=errors, creating=creating)


CHOICES = {"misfire_policy": MISFIRE_POLICIES, "overlap_policy": OVERLAP_POLICIES}
