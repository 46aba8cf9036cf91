"""cronhive.store.protocols: `MongoStore` provides every member of each process's
interface with the same signature (mypy proves the same statically: see the
``_conforms`` check at the end of cronhive.store), and each process is typed
against its own interface."""

from __future__ import annotations

import inspect
import typing

import pytest

from cronhive.store import MongoStore, protocols

INTERFACES = [protocols.ApiStore, protocols.SchedulerStore, protocols.WorkerStore]


def members(interface: type) -> dict[str, inspect.Signature]:
    names = {name for klass in interface.__mro__ if klass not in (object, typing.Protocol, typing.Generic)
             for name, value in vars(klass).items() if callable(value) and not name.startswith("_")}
    return {name: inspect.signature(getattr(interface, name)) for name in names}


@pytest.mark.parametrize("interface", INTERFACES, ids=lambda klass: klass.__name__)
def test_the_store_provides_each_process_interface(interface: type) -> None:
    wanted = members(interface)
    assert wanted, interface
    for name, signature in wanted.items():
        provided = inspect.signature(inspect.unwrap(getattr(MongoStore, name)))
        assert list(provided.parameters) == list(signature.parameters), name
        assert str(provided) == str(signature), name


def test_the_interfaces_are_small_and_each_process_uses_only_its_own() -> None:
    api, scheduler, worker = (set(members(interface)) for interface in INTERFACES)
    every = {name for name in dir(MongoStore) if not name.startswith("_") and callable(getattr(MongoStore, name))}
    assert not (api | scheduler | worker) - every
    assert "advance_jobs" in scheduler and "advance_jobs" not in api | worker
    assert "start_run_attempt" in worker and "start_run_attempt" not in api | scheduler
    assert "create_job" in api and "create_job" not in scheduler | worker
    shared = api & scheduler & worker
    assert shared == {"ping", "server_time", "close", "claim_lease", "renew_lease", "release_lease"}
