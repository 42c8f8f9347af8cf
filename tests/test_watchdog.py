"""The watchdog's bookkeeping, without a server: which models to reload, and when the stubs of
replaced instances are retired."""

from __future__ import annotations

import pytest

from whisper_ops.watchdog import Retirements, instance_count, models_to_reload

pytestmark = pytest.mark.unit


def test_a_ready_model_short_of_stubs_is_reloaded_and_an_unloaded_one_is_not():
    expected = {"whisper": 20, "whisper_engine": 1}
    assert models_to_reload(expected, {"whisper": 19, "whisper_engine": 1},
                            ["whisper", "whisper_engine"]) == ["whisper"]
    assert models_to_reload(expected, {"whisper": 20}, ["whisper"]) == []
    # More stubs than instances (replaced ones not yet retired) is not a loss.
    assert models_to_reload(expected, {"whisper": 27, "whisper_engine": 0},
                            ["whisper", "whisper_engine"]) == ["whisper_engine"]


def test_instance_count_follows_the_gpus():
    assert instance_count({"instance_group": [{"count": 20, "kind": "KIND_CPU"}]}) == 20
    assert instance_count({"instance_group": [{"count": 1, "kind": "KIND_GPU",
                                               "gpus": [0, 1]}]}) == 2


def test_a_replaced_stub_is_retired_once_idle():
    ticks = {10: 100, 11: 500}
    retirements = Retirements(idle_s=15, grace_s=45)
    retirements.add({10: "whisper", 11: "whisper"}, now=0.0)
    assert retirements.due(0.0, ticks.get) == {}
    ticks[11] += 7  # still finishing a request
    assert retirements.due(10.0, ticks.get) == {}
    assert retirements.due(15.0, ticks.get) == {10: "whisper"}
    ticks[11] += 3
    assert retirements.due(20.0, ticks.get) == {}
    assert retirements.due(35.0, ticks.get) == {11: "whisper"}
    assert len(retirements) == 0


def test_a_busy_replaced_stub_is_retired_after_the_grace_period():
    ticks = {10: 0}
    retirements = Retirements(idle_s=15, grace_s=45)
    retirements.add({10: "whisper"}, now=0.0)
    for now in range(0, 45, 5):
        ticks[10] += 1
        assert retirements.due(float(now), ticks.get) == {}
    ticks[10] += 1
    assert retirements.due(45.0, ticks.get) == {10: "whisper"}


def test_a_stub_that_exits_by_itself_is_forgotten():
    retirements = Retirements()
    retirements.add({10: "whisper_engine"}, now=0.0)
    assert retirements.due(100.0, {}.get) == {} and len(retirements) == 0
