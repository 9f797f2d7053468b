"""Names and ports belong to client keys, with a grace period after a disconnect."""

from __future__ import annotations

import random

import pytest

from seamless_relay.registry import Registry, RegistryError, random_subdomain, validate_subdomain

ALICE, BOB = b"a" * 32, b"b" * 32


def test_live_name_is_taken_for_others() -> None:
    registry: Registry[str] = Registry(grace=300)
    registry.claim("app", ALICE, "tunnel-1", now=0)
    with pytest.raises(RegistryError) as info:
        registry.claim("app", BOB, "tunnel-2", now=1)
    assert info.value.code == "name-taken"
    assert registry.get("app") == "tunnel-1"


def test_released_name_waits_for_its_owner_through_the_grace_period() -> None:
    registry: Registry[str] = Registry(grace=300)
    registry.claim("app", ALICE, "t1", now=0)
    registry.release("app", "t1", now=10)
    assert registry.get("app") is None and registry.is_reserved("app")
    assert not registry.available("app", BOB, now=309)
    with pytest.raises(RegistryError):
        registry.claim("app", BOB, "t2", now=309)
    registry.claim("app", ALICE, "t3", now=200)  # the owner comes back in time
    assert registry.get("app") == "t3"


def test_after_the_grace_period_anyone_may_take_it() -> None:
    registry: Registry[str] = Registry(grace=300)
    registry.claim("app", ALICE, "t1", now=0)
    registry.release("app", "t1", now=10)
    registry.claim("app", BOB, "t2", now=310)
    assert registry.owner("app") == BOB


def test_release_of_a_replaced_value_does_not_free_the_new_one() -> None:
    registry: Registry[str] = Registry(grace=300)
    registry.claim("app", ALICE, "old", now=0)
    registry.release("app", "old", now=1)
    registry.claim("app", ALICE, "new", now=2)
    registry.release("app", "old", now=3)  # a late cleanup of the old tunnel
    assert registry.get("app") == "new"


def test_expire_forgets_only_lapsed_reservations() -> None:
    registry: Registry[str] = Registry(grace=60)
    registry.claim("a", ALICE, "t1", now=0)
    registry.claim("b", ALICE, "t2", now=0)
    registry.release("a", "t1", now=0)
    registry.expire(now=61)
    assert registry.owner("a") is None and registry.get("b") == "t2"
    assert len(registry) == 1


@pytest.mark.parametrize("name", ["", "-x", "x-", "a" * 64, "a.b", "ü", "a_b", "a b"])
def test_invalid_labels_are_refused(name: str) -> None:
    with pytest.raises(RegistryError) as info:
        validate_subdomain(name, reserved=frozenset())
    assert info.value.code == "invalid"


def test_reserved_labels_are_forbidden_and_case_folds() -> None:
    assert validate_subdomain("MyApp", reserved=frozenset()) == "myapp"
    with pytest.raises(RegistryError) as info:
        validate_subdomain("Admin", reserved=frozenset({"admin"}))
    assert info.value.code == "forbidden"


def test_random_subdomains_have_the_configured_shape() -> None:
    rng = random.Random(1)
    names = {random_subdomain(rng, length=8, prefix="t-") for _ in range(200)}
    assert len(names) == 200
    for name in names:
        assert name.startswith("t-") and len(name) == 10
        assert validate_subdomain(name, reserved=frozenset()) == name
