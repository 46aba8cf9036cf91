"""cronhive.settings: one frozen object from the environment, defaults, refusals."""

from __future__ import annotations

import dataclasses

import pytest

from cronhive.errors import ConfigurationError
from cronhive.settings import DEFAULT_MONGODB_URI, DEFAULT_RABBITMQ_URL, VARIABLES, Settings, redact_url


def test_defaults_from_an_empty_environment() -> None:
    settings = Settings.from_env({})
    assert settings.mongodb_uri == DEFAULT_MONGODB_URI == "mongodb://127.0.0.1:27017"
    assert settings.mongodb_uri_from_default is True
    assert settings.mongodb_db == "cronhive"
    assert settings.mongodb_timeout_ms == 3000
    assert settings.rabbitmq_url == DEFAULT_RABBITMQ_URL == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert settings.runs_queue == "cronhive.runs"
    assert (settings.api_host, settings.api_port, settings.api_workers) == ("127.0.0.1", 8080, 2)
    assert settings.api_token is None
    assert settings.data_dir == "./.data"
    assert settings.handler_modules == ()
    assert (settings.job_lease_s, settings.leader_lease_s) == (30, 10)
    assert (settings.run_history_limit, settings.run_history_days) == (1000, 30)
    assert settings.log_level == "INFO"


def test_the_table_defaults_are_the_dataclass_defaults() -> None:
    defaults = Settings.from_env({})
    fields = {field.name for field in dataclasses.fields(Settings)}
    for env_name, (field_name, default_text, description) in VARIABLES.items():
        assert field_name in fields, env_name
        assert description
        if default_text != "unset":
            assert str(getattr(defaults, field_name)) == default_text, env_name


def test_every_variable_is_read() -> None:
    env = {
        "MONGODB_URI": "mongodb://db.internal:27018/?replicaSet=rs0",
        "MONGODB_DB": "cron_prod",
        "MONGODB_TIMEOUT_MS": "1500",
        "RABBITMQ_URL": "amqps://user:pw@mq.internal:5671/cron",
        "RUNS_QUEUE": "prod.runs",
        "API_HOST": "0.0.0.0",
        "API_PORT": "9090",
        "API_WORKERS": "4",
        "API_TOKEN": "tok",
        "DATA_DIR": "/var/lib/cronhive",
        "EMBEDDED_MONGODB_PORT": "27999",
        "HANDLER_MODULES": " mycompany.handlers , other.mod ,,",
        "JOB_LEASE_S": "12",
        "LEADER_LEASE_S": "6",
        "RUN_HISTORY_LIMIT": "50",
        "RUN_HISTORY_DAYS": "7",
        "LOG_LEVEL": "debug",
    }
    settings = Settings.from_env(env)
    assert settings.mongodb_uri == env["MONGODB_URI"] and settings.mongodb_uri_from_default is False
    assert settings.mongodb_db == "cron_prod" and settings.mongodb_timeout_ms == 1500
    assert settings.rabbitmq_url == env["RABBITMQ_URL"] and settings.runs_queue == "prod.runs"
    assert (settings.api_host, settings.api_port, settings.api_workers, settings.api_token) == ("0.0.0.0", 9090, 4, "tok")
    assert settings.data_dir == "/var/lib/cronhive" and settings.embedded_mongodb_port == 27999
    assert settings.handler_modules == ("mycompany.handlers", "other.mod")
    assert (settings.job_lease_s, settings.leader_lease_s) == (12, 6)
    assert (settings.run_history_limit, settings.run_history_days) == (50, 7)
    assert settings.log_level == "DEBUG"


def test_empty_values_mean_the_default() -> None:
    settings = Settings.from_env({"MONGODB_URI": "", "API_PORT": "", "API_TOKEN": "", "LOG_LEVEL": ""})
    assert settings.mongodb_uri_from_default is True and settings.api_port == 8080
    assert settings.api_token is None and settings.log_level == "INFO"


def test_settings_are_frozen_and_replace_copies() -> None:
    settings = Settings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.api_port = 1  # type: ignore[misc]
    changed = settings.replace(api_port=1)
    assert changed.api_port == 1 and settings.api_port == 8080


@pytest.mark.parametrize("env,names", [
    ({"API_PORT": "eighty"}, "API_PORT"),
    ({"API_PORT": "-1"}, "API_PORT"),
    ({"API_WORKERS": "0"}, "API_WORKERS"),
    ({"MONGODB_TIMEOUT_MS": "50"}, "MONGODB_TIMEOUT_MS"),
    ({"MONGODB_TIMEOUT_MS": "3s"}, "MONGODB_TIMEOUT_MS"),
    ({"JOB_LEASE_S": "2"}, "JOB_LEASE_S"),
    ({"LEADER_LEASE_S": "1.5"}, "LEADER_LEASE_S"),
    ({"RUN_HISTORY_LIMIT": "0"}, "RUN_HISTORY_LIMIT"),
    ({"EMBEDDED_MONGODB_PORT": "0"}, "EMBEDDED_MONGODB_PORT"),
    ({"MONGODB_URI": "postgres://db"}, "MONGODB_URI"),
    ({"MONGODB_URI": "127.0.0.1:27017"}, "MONGODB_URI"),
    ({"RABBITMQ_URL": "http://mq:15672"}, "RABBITMQ_URL"),
    ({"RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:5672//"}, "RABBITMQ_URL"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
])
def test_bad_values_raise_configuration_error(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env(env)
    assert names in info.value.message


def test_the_empty_vhost_is_rejected_and_percent_2f_accepted() -> None:
    with pytest.raises(ConfigurationError, match="%2F"):
        Settings.from_env({"RABBITMQ_URL": "amqp://guest:guest@localhost:5672//"})
    assert Settings.from_env({"RABBITMQ_URL": "amqp://guest:guest@localhost:5672/%2F"}).rabbitmq_url.endswith("/%2F")
    assert Settings.from_env({"RABBITMQ_URL": "amqp://guest:guest@localhost:5672/prod"}).rabbitmq_url.endswith("/prod")


def test_errors_never_show_the_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"MONGODB_URI": "http://admin:hunter2@db:27017"})
    assert "hunter2" not in info.value.message and "***" in info.value.message


@pytest.mark.parametrize("url,expected", [
    ("amqp://guest:guest@127.0.0.1:5672/%2F", "amqp://guest:***@127.0.0.1:5672/%2F"),
    ("mongodb://admin:p%40ss@db1:27017,db2:27017/?replicaSet=rs0", "mongodb://admin:***@db1:27017,db2:27017/?replicaSet=rs0"),
    ("mongodb://127.0.0.1:27017", "mongodb://127.0.0.1:27017"),
    ("mongodb://user@db:27017", "mongodb://user@db:27017"),
    ("amqp://:secret@mq/%2F", "amqp://:***@mq/%2F"),
    ("mongodb+srv://u:pw@cluster.example.net/db", "mongodb+srv://u:***@cluster.example.net/db"),
])
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_from_env_reads_os_environ_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_PORT", "8181")
    assert Settings.from_env().api_port == 8181
    assert Settings.from_env({}).api_port == 8080


def test_the_dashboards_secret_key_is_optional_and_long_when_given() -> None:
    assert Settings.from_env({}).ui_secret_key is None
    assert Settings.from_env({"UI_SECRET_KEY": "k" * 32}).ui_secret_key == "k" * 32
    with pytest.raises(ConfigurationError, match="UI_SECRET_KEY"):
        Settings.from_env({"UI_SECRET_KEY": "short"})


# -- API_TOKENS and API_READS ---------------------------------------------------------


def test_named_tokens_are_parsed_with_their_roles() -> None:
    from cronhive.enums import ReadAccess, TokenRole
    from cronhive.settings import ApiToken

    settings = Settings.from_env({"API_TOKEN": "root-secret", "API_READS": "token",
                                  "API_TOKENS": " ci:ci-s3cret , grafana:g-s3cret:read ,ops.team-1:o:admin,"})
    assert settings.api_tokens == (ApiToken("ci", "ci-s3cret"), ApiToken("grafana", "g-s3cret", TokenRole.READ),
                                   ApiToken("ops.team-1", "o", TokenRole.ADMIN))
    assert [(t.name, t.can_write) for t in settings.tokens] == [
        ("admin", True), ("ci", True), ("grafana", False), ("ops.team-1", True)]
    assert settings.api_reads == ReadAccess.TOKEN and settings.auth_required
    for secret in ("root-secret", "ci-s3cret", "g-s3cret"):
        assert secret not in repr(settings)
    open_settings = Settings.from_env({})
    assert open_settings.api_reads == ReadAccess.PUBLIC and not open_settings.auth_required
    assert Settings.from_env({"API_TOKENS": "ci:x"}).auth_required


@pytest.mark.parametrize(("env", "expected"), [
    ({"API_TOKENS": "ci"}, "API_TOKENS entry 1 ('ci') must be name:secret"),
    ({"API_TOKENS": "ci:a:b:read"}, "a secret cannot hold ':'"),
    ({"API_TOKENS": "ok:s1,Bad Name:s2"}, "API_TOKENS entry 2: the name must match"),
    ({"API_TOKENS": "ci:"}, "the secret must be non-empty"),
    ({"API_TOKENS": "ci:has space"}, "the secret must be non-empty, without spaces"),
    ({"API_TOKENS": "ci:s:write"}, "the role must be read or admin, got 'write'"),
    ({"API_TOKENS": "anonymous:s"}, "reserved"),
    ({"API_TOKENS": "scheduler:s"}, "reserved"),
    ({"API_TOKENS": "ci:s1,ci:s2"}, "names each token once"),
    ({"API_TOKENS": "a:same,b:same"}, "the same secret"),
    ({"API_TOKENS": "b:same", "API_TOKEN": "same"}, "the same secret"),
    ({"API_TOKENS": "admin:s", "API_TOKEN": "t"}, "cannot name a token 'admin'"),
    ({"API_READS": "private"}, "API_READS must be public or token, got 'private'"),
    ({"API_READS": "token"}, "API_READS=token needs a token"),
])
def test_bad_tokens_stop_the_start_with_a_message_that_hides_the_secret(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env(env)
    message = str(refused.value)
    assert expected in message, message
    for secret in ("s1", "s2", "same", "has space", "a:b"):
        assert f":{secret}" not in message and f"'{secret}'" not in message, message


def test_admin_alone_is_allowed_without_api_token() -> None:
    settings = Settings.from_env({"API_TOKENS": "admin:s"})
    assert [t.name for t in settings.tokens] == ["admin"]
