"""The microservices example (examples/microservices/scenario.py) against a real broker: an
order service publishes 200 orders (two events each, keyed by order id) and the payment,
analytics and logistics services - consumer groups of two instances each - must each handle
every order, each order by exactly one instance of each service, its events in order."""

import importlib.util
import subprocess
import sys
from collections import Counter

import pytest

from strata_e2e import GROUP_OVERRIDES, REPO_ROOT

SCENARIO = REPO_ROOT / "examples" / "microservices" / "scenario.py"


def load_scenario():
    spec = importlib.util.spec_from_file_location("microservices_scenario", SCENARIO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(90)
def test_every_service_handles_every_order_once(broker_factory):
    broker = broker_factory(GROUP_OVERRIDES)
    scenario = load_scenario()
    orders = 200
    results, health = scenario.run_scenario(broker.bootstrap, orders=orders, timeout_s=60)

    assert set(results) == {"payment", "analytics", "logistics"}
    expected = {f"order-{n:05d}" for n in range(orders)}
    for service, by_instance in results.items():
        assert len(by_instance) == 2, f"{service} has instances {sorted(by_instance)}"
        handled = [h for hs in by_instance.values() for h in hs]
        # Every order reached the service (at least once) ...
        assert {order for order, *_ in handled} == expected, f"{service} missed orders"
        # ... and, with synchronous commits and no rebalance mid-run, exactly once: no event
        # (partition, offset) handled twice, by the same or the other instance.
        dup = [k for k, n in Counter((p, o) for _, _, p, o in handled).items() if n > 1]
        assert not dup, f"{service} handled these events more than once: {dup[:10]}"
        assert len(handled) == 2 * orders
        # Each order was handled by exactly one instance (keyed by order id: one partition).
        owners = {}
        for instance, hs in by_instance.items():
            for order, *_ in hs:
                owners.setdefault(order, set()).add(instance)
        shared = {o: i for o, i in owners.items() if len(i) > 1}
        assert not shared, f"{service}: orders handled by both instances: {list(shared.items())[:5]}"
        # Both instances did part of the work.
        assert all(by_instance.values()), f"{service}: an idle instance: " + str(
            {i: len(h) for i, h in by_instance.items()})
    for instance, (rebalances, errors) in health.items():
        assert not errors, f"{instance} errors: {errors}"
        assert rebalances == 0, f"{instance} was assigned {rebalances} times mid-run: a rebalance"
    assert scenario.check(results, orders) == []


def test_scenario_runs_as_a_script(broker_factory):
    """The README's command line, on a second topic and groups of the same broker."""
    broker = broker_factory(GROUP_OVERRIDES)
    result = subprocess.run(
        [sys.executable, str(SCENARIO), "--bootstrap", broker.bootstrap, "--orders", "30",
         "--topic", "orders-cli", "--partitions", "4", "--group-prefix", "cli-"],
        capture_output=True, text=True, timeout=80,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-3000:]}"
    assert "every service handled every order once" in result.stdout, result.stdout
