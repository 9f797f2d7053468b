"""The relay store: identity plus reservations, 0600, restored across restarts."""

from __future__ import annotations

import json
from pathlib import Path

from seamless_relay.registry import Registry
from seamless_relay.store import HTTP, PORTS, RelayStore

ALICE, BOB = b"a" * 32, b"b" * 32


def test_live_and_reserved_names_round_trip(tmp_path: Path) -> None:
    store = RelayStore(tmp_path / "relay.json")
    identity = store.load_identity()
    names: Registry[str] = Registry(grace=300)
    ports: Registry[str] = Registry(grace=300)
    names.claim("app.localhost", ALICE, "live", now=100)
    ports.claim(("tcp", 2222), BOB, "t", now=100)
    ports.release(("tcp", 2222), "t", now=150)
    store.save(identity, {HTTP: names, PORTS: ports}, now=200, grace=300)
    assert (tmp_path / "relay.json").stat().st_mode & 0o777 == 0o600
    assert RelayStore(tmp_path / "relay.json").load_identity().public == identity.public

    fresh_names: Registry[str] = Registry(grace=300)
    fresh_ports: Registry[str] = Registry(grace=300)
    restored = RelayStore.restore(store.load_reservations(), {HTTP: fresh_names, PORTS: fresh_ports}, now=0)
    assert restored == 2
    assert not fresh_names.available("app.localhost", BOB, now=1)  # held for its owner
    assert fresh_names.available("app.localhost", ALICE, now=1)
    assert not fresh_ports.available(("tcp", 2222), ALICE, now=1)
    assert fresh_ports.available(("tcp", 2222), ALICE, now=251)  # 450 - 200 = 250 s were left


def test_corrupt_reservations_are_ignored_not_fatal(tmp_path: Path) -> None:
    store = RelayStore(tmp_path / "relay.json")
    store.load_identity()
    doc = json.loads(store.path.read_text())
    doc["reservations"] = [{"registry": "http", "key": {"bad": 1}, "owner": "zz", "until": "soon"}]
    store.path.write_text(json.dumps(doc))
    assert store.load_reservations() == []
    assert store.load_identity()  # the identity itself still loads
