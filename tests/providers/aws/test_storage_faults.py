"""The storage and identity types converge through the fault-injection proxy in front of moto
(``tests/harness/fault_proxy.py``): throttling, HTTP 500, connection resets, and "no such
object" right after a create (IAM's and S3's eventual consistency) — botocore's standard
retries and :func:`~tectum.providers.aws.client.until_visible` absorb them, so one apply makes
everything, a plan then shows no change (through the proxy too), and a destroy removes it all.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tectum.providers.aws.storage_common import StillListed, delete_confirmed
from tests.conftest import Result, ok
from tests.harness.fault_proxy import FaultProxy, Faults, fault_proxy
from tests.harness.moto import REGION, Moto
from tests.providers.aws.test_storage import NOTHING, TOML, World, expected, stack, state_names

pytestmark = pytest.mark.aws

#: faults while applying (each call fails once or more before it passes at these rates);
#: botocore's backoff after a throttle grows fast, so the quick trial keeps them low
LIGHT = Faults(throttle=0.08, error=0.06, reset=0.03, not_found=0.6, window=4)
HEAVY = Faults(throttle=0.15, error=0.1, reset=0.05, not_found=0.6, window=4)


@pytest.fixture
def world(moto: Moto) -> World:
    return World(moto)


@pytest.fixture
def proxy(moto: Moto) -> Iterator[FaultProxy]:
    with fault_proxy(moto.url) as made:
        yield made


@pytest.mark.parametrize("faults, seed", [
    pytest.param(LIGHT, 1, id="light"),
    pytest.param(HEAVY, 2, id="heavy", marks=pytest.mark.slow)])
def test_every_type_converges_through_faults(
        proxy: FaultProxy, moto: Moto, tectum: Callable[..., Result], world: World,
        make_project: Callable[..., Path], faults: Faults, seed: int) -> None:
    suffix = secrets.token_hex(3)
    env = {**moto.env(), "AWS_ENDPOINT_URL": proxy.url}

    def cli(*args: str) -> Result:
        return tectum(*args, cwd=root, env=env)

    root = make_project(stack(suffix), {"tectum.toml": TOML})
    proxy.reseed(Faults(**{**faults.__dict__, "seed": seed}))
    applied = cli("apply", "-auto-approve")
    assert applied.returncode == 0, applied.output
    injected = dict(proxy.injected)
    # (throttles and errors come in every run; a "not found" only when a request naming a
    # new object falls in the few requests after its create, which concurrent requests may
    # use up: not asserted here; tests/providers/aws/test_ec2.py's fault test asserts it)
    assert injected.get("throttle") and injected.get("error"), injected
    assert world.everything() == expected(suffix) == state_names(
        lambda *a, **k: tectum(*a, env=env, **k), root)
    # a plan through the faults (no create, so no "not found" window) sees no change
    proxy.reseed(Faults(**{**faults.__dict__, "seed": seed + 100}))
    assert "No changes" in ok(cli("plan")).stdout
    destroyed = cli("destroy", "-auto-approve")
    assert destroyed.returncode == 0, destroyed.output
    assert world.everything() == NOTHING
    assert sum(proxy.injected.values()) > sum(injected.values())


def test_a_create_whose_answer_is_lost_makes_one_object(
        proxy: FaultProxy, moto: Moto, tectum: Callable[..., Result], world: World,
        make_project: Callable[..., Path]) -> None:
    """Every create's answer is lost (moto makes the bucket, role or table; the connection is
    reset): the object there is taken as this create's, never refused as "exists already" or
    recorded as found (which a destroy would forget)."""
    suffix = secrets.token_hex(3)
    env = {**moto.env(), "AWS_ENDPOINT_URL": proxy.url}
    root = make_project(stack(suffix), {"tectum.toml": TOML})
    proxy.reseed(Faults(lost=1.0, seed=5))
    applied = tectum("apply", "-auto-approve", cwd=root, env=env)
    assert applied.returncode == 0, applied.output
    assert proxy.injected.get("lost", 0) >= 3, proxy.injected
    assert world.everything() == expected(suffix) == state_names(
        lambda *a, **k: tectum(*a, env=env, **k), root)
    proxy.reseed(Faults())
    assert "No changes" in ok(tectum("plan", cwd=root, env=env)).stdout
    destroyed = tectum("destroy", "-auto-approve", cwd=root, env=env)
    assert destroyed.returncode == 0, destroyed.output
    assert world.everything() == NOTHING


def test_a_delete_denied_while_still_listed_is_not_reported_done(moto: Moto) -> None:
    """A delete answered "no such bucket" while ListBuckets still lists it (S3's listing is
    eventually consistent) is tried again until the list agrees; if it never does, the
    delete fails with a sentence saying so — never "destroyed" for a bucket AWS still shows."""
    s3 = moto.client("s3")
    name = f"tectum-listed-{secrets.token_hex(3)}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    try:
        def gone_bucket() -> None:  # (a bucket that is not there: answered NoSuchBucket)
            s3.delete_bucket(Bucket=f"{name}-never")

        def listed() -> bool:
            return name in {b["Name"] for b in s3.list_buckets()["Buckets"]}

        with pytest.raises(StillListed, match=f"bucket {name}: the delete answers"):
            delete_confirmed(gone_bucket, frozenset({"NoSuchBucket"}), listed,
                             what=f"bucket {name}", timeout=1.0)
        # the list catches up meanwhile: done, without another delete
        calls: list[str] = []

        def delete_then_unlist() -> None:
            calls.append("delete")
            s3.delete_bucket(Bucket=name)  # (gone now)
            gone_bucket()

        delete_confirmed(delete_then_unlist, frozenset({"NoSuchBucket"}), listed,
                         what=f"bucket {name}", timeout=5.0)
        assert calls == ["delete"] and not listed()
    finally:
        with contextlib.suppress(Exception):
            s3.delete_bucket(Bucket=name)
