"""Fault settings parsing and the random-draw contract that seeded reliability tests rely on (no server)."""

from __future__ import annotations

import random

import pytest

from devstack.ahi_local.errors import InternalError, ThrottlingError, ValidationError
from devstack.ahi_local.faults import FaultInjector, FaultSettings
from devstack.ahi_local.settings import faults_from_env


def test_one_draw_per_rate_throttle_first() -> None:
    injector = FaultInjector(FaultSettings(throttle_rate=0.3, error_rate=0.5, seed=7))
    rng = random.Random(7)
    for _ in range(200):
        if rng.random() < 0.3:
            with pytest.raises(ThrottlingError, match="Rate exceeded for GetImageFrame"):
                injector.check_request("GetImageFrame")
        elif rng.random() < 0.5:
            with pytest.raises(InternalError, match="fault injection: error_rate"):
                injector.check_request("GetImageFrame")
        else:
            injector.check_request("GetImageFrame")


def test_operations_scope_and_targeted_frames() -> None:
    injector = FaultInjector(
        FaultSettings(
            error_rate=1.0, operations=frozenset({"GetImageSet"}), fail_frames=frozenset({"a" * 32})
        )
    )
    injector.check_request("GetImageFrame")  # out of scope: never fails
    with pytest.raises(InternalError, match="GetImageSet failed"):
        injector.check_request("GetImageSet")
    assert injector.frame_fault("a" * 32) == "fail" and injector.frame_fault("b" * 32) is None


def test_settings_from_mapping_and_environment() -> None:
    env = {"AHI_LOCAL_HANG_FRAMES": "x, y", "AHI_LOCAL_LATENCY_MS": "20", "AHI_LOCAL_FAULT_SEED": "3"}
    settings = FaultSettings.from_mapping(faults_from_env(env))
    assert (
        settings.hang_frames == frozenset({"x", "y"}) and settings.latency_ms == 20.0 and settings.seed == 3
    )
    with pytest.raises(ValidationError, match="unknown fault settings \\['bogus'\\]"):
        FaultSettings.from_mapping({"bogus": 1})
    with pytest.raises(ValidationError, match="corrupt_rate=1.5 must be between 0 and 1"):
        FaultSettings.from_mapping({"corrupt_rate": 1.5})
    with pytest.raises(ValidationError, match="invalid fault settings"):
        FaultSettings.from_mapping({"latency_ms": "slow"})
