"""cronhive.handlers: the registry, the built-in handlers, HANDLER_MODULES."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cronhive import handlers
from cronhive.errors import ConfigurationError, ValidationError
from cronhive.handlers import HandlerContext, HandlerFailed, HandlerRegistry, load_handler_modules


def context(**changes: object) -> HandlerContext:
    values: dict = {
        "job_id": "job_x", "run_id": "run_1", "attempt": 1,
        "scheduled_for": datetime(2026, 3, 26, 8, tzinfo=UTC), "trigger": "schedule",
        "logger": logging.getLogger("cronhive.test.handlers"),
        "fencing_token": 7,
    }
    values.update(changes)
    return HandlerContext(**values)


def test_built_in_handlers_are_registered() -> None:
    assert {"noop", "sleep", "fail", "reminder_scheduler"} <= set(handlers.registry.names())
    assert handlers.registry.names() == sorted(handlers.registry.names())
    assert "noop" in handlers.registry and "nope" not in handlers.registry


def test_noop() -> None:
    assert handlers.registry.get("noop")({}, context()) is None


def test_sleep_sleeps_args_seconds() -> None:
    sleep = handlers.registry.get("sleep")
    started = time.monotonic()
    sleep({"seconds": 0.05}, context())
    assert time.monotonic() - started >= 0.05
    sleep({"seconds": 0}, context())


@pytest.mark.parametrize("seconds", [-1, "5", True, None, [1]])
def test_sleep_rejects_bad_seconds(seconds: object) -> None:
    with pytest.raises(ValueError, match="seconds"):
        handlers.registry.get("sleep")({"seconds": seconds}, context())


def test_fail_raises_with_the_given_message() -> None:
    with pytest.raises(HandlerFailed, match="always fails"):
        handlers.registry.get("fail")({}, context())
    with pytest.raises(HandlerFailed, match=r"^disk full$"):
        handlers.registry.get("fail")({"message": "disk full"}, context())


def test_reminder_scheduler_logs_the_check_it_would_do(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="cronhive.test.handlers"):
        result = handlers.registry.get("reminder_scheduler")({}, context())
    assert result == {"checked_before": "2026-03-26T08:00:00+00:00"}
    (record,) = [r for r in caplog.records if r.name == "cronhive.test.handlers"]
    assert "reminder check" in record.getMessage()
    assert (record.job_id, record.run_id) == ("job_x", "run_1")  # type: ignore[attr-defined]
    assert handlers.registry.get("reminder_scheduler")({}, context(scheduled_for=None)) == {"checked_before": None}


def test_a_registry_refuses_two_functions_under_one_name() -> None:
    registry = HandlerRegistry()

    def first(args: dict, ctx: HandlerContext) -> None: ...

    def second(args: dict, ctx: HandlerContext) -> None: ...

    assert registry.register("job", first) is first
    assert registry.register("job", first) is first  # the same function again (a re-import) is fine
    with pytest.raises(ConfigurationError, match="twice"):
        registry.register("job", second)
    assert registry.get("job") is first and registry.names() == ["job"]


def test_an_unknown_handler_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as info:
        HandlerRegistry().get("missing")
    assert info.value.details == {"handler": ["unknown handler 'missing'"]}


@pytest.fixture
def module_dir(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))


def test_handler_modules_add_their_handlers(module_dir: Path) -> None:
    module = f"cronhive_test_handlers_{uuid.uuid4().hex[:8]}"
    name = f"{module}_report"
    (module_dir / f"{module}.py").write_text(
        "from cronhive import handler\n\n"
        f"@handler({name!r})\n"
        "def report(args, ctx):\n"
        "    '''Sends the report.'''\n"
        "    return args['to']\n"
    )
    try:
        registry = load_handler_modules([module])
        assert registry is handlers.registry
        assert name in registry.names()
        assert registry.get(name)({"to": "ops"}, context()) == "ops"
        assert load_handler_modules([module]) is registry  # importing again changes nothing
    finally:
        handlers.registry._handlers.pop(name, None)  # keep the process registry as the other tests expect
        sys.modules.pop(module, None)


def test_a_missing_handler_module_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no_such_cronhive_module"):
        load_handler_modules(["no_such_cronhive_module"])


@pytest.mark.parametrize("source", [
    "import a_dependency_that_is_not_installed\n",
    "def broken(:\n",
    "raise RuntimeError('needs SMTP_HOST')\n",
    "from cronhive.handlers import handler\n\n@handler('noop')\ndef other_noop(args, ctx):\n    pass\n",
], ids=["missing dependency", "syntax error", "raises on import", "takes a built-in name"])
def test_a_handler_module_that_fails_to_import_is_a_configuration_error(module_dir: Path, source: str) -> None:
    module = f"cronhive_test_broken_{uuid.uuid4().hex[:8]}"
    (module_dir / f"{module}.py").write_text(source)
    with pytest.raises(ConfigurationError):
        load_handler_modules([module])
    assert handlers.registry.get("noop") is handlers.noop
