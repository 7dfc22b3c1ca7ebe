"""DPConfig: validation names field, value and what is allowed; the accountant and noise it implies."""

from __future__ import annotations

import math
from typing import Any

import pytest

from fedra.errors import ConfigError
from fedra.privacy import Accountant, AdaptiveClipping, DPConfig


def test_a_valid_config_and_its_defaults() -> None:
    config = DPConfig(clip_norm=1.0, delta=1e-5, noise_multiplier=1.1)
    assert (config.mode, config.accountant, config.sampling, config.adaptive) == ("server", "rdp", "poisson", None)
    assert config.resolve_noise_multiplier(rounds=100, sampling_rate=0.1) == 1.1
    assert config.scheme == "poisson"


@pytest.mark.parametrize(("fields", "message"), [
    ({"clip_norm": 0.0}, r"privacy.clip_norm: expected a number in \(0, inf\), got 0.0"),
    ({"clip_norm": math.nan}, "privacy.clip_norm"),
    ({"delta": 1.0}, r"privacy.delta: expected a number in \(0, 1\), got 1.0"),
    ({"noise_multiplier": -1.0}, r"privacy.noise_multiplier: expected a number in \[0, inf\), got -1.0"),
    ({"noise_multiplier": None}, "expected exactly one of them"),
    ({"target_epsilon": 1.0}, "expected exactly one of them"),
    ({"mode": "central"}, "privacy.mode: expected one of 'server', 'client', 'local', got 'central'"),
    ({"accountant": "gdp"}, "privacy.accountant: expected one of 'rdp', 'pld', got 'gdp'"),
    ({"sampling": "shuffle"}, "privacy.sampling: expected one of 'poisson', 'fixed', got 'shuffle'"),
    ({"max_epsilon": 0}, "privacy.max_epsilon"),
    ({"accountant": "pld", "sampling": "fixed"}, "privacy.accountant: expected 'rdp' with sampling = 'fixed'"),
    ({"mode": "local", "adaptive": AdaptiveClipping()}, "privacy.adaptive: expected no adaptive clipping"),
    ({"clip_norm": True}, "privacy.clip_norm"),
])
def test_invalid_fields_are_named_with_value_and_allowed(fields: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"clip_norm": 1.0, "delta": 1e-5, "noise_multiplier": 1.0}
    with pytest.raises(ConfigError, match=message):
        DPConfig(**{**base, **fields})


@pytest.mark.parametrize(("fields", "message"), [
    ({"target_quantile": 1.0}, "privacy.adaptive.target_quantile"),
    ({"learning_rate": 0.0}, "privacy.adaptive.learning_rate"),
    ({"count_stddev": -1.0}, "privacy.adaptive.count_stddev"),
])
def test_invalid_adaptive_fields(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AdaptiveClipping(**fields)


def test_from_mapping_builds_nested_adaptive_and_refuses_unknown_keys() -> None:
    config = DPConfig.from_mapping({"clip_norm": 0.5, "delta": 1e-6, "target_epsilon": 3.0,
                                    "adaptive": {"target_quantile": 0.7}, "max_epsilon": 4.0})
    assert config.adaptive == AdaptiveClipping(target_quantile=0.7)
    assert config.adaptive.resolved_count_stddev(100) == 5.0
    with pytest.raises(ConfigError, match="unknown \\['noise'\\]"):
        DPConfig.from_mapping({"clip_norm": 0.5, "delta": 1e-6, "noise": 1.0})
    with pytest.raises(ConfigError, match=r"privacy\.adaptive: expected keys among"):
        DPConfig.from_mapping({"clip_norm": 0.5, "delta": 1e-6, "noise_multiplier": 1.0, "adaptive": {"eta": 1}})
    with pytest.raises(ConfigError, match="privacy:"):
        DPConfig.from_mapping({"delta": 1e-6, "noise_multiplier": 1.0})  # clip_norm missing


def test_target_epsilon_resolves_to_a_noise_that_stays_within_it() -> None:
    config = DPConfig(clip_norm=1.0, delta=1e-5, target_epsilon=3.0, max_epsilon=3.0)
    z = config.resolve_noise_multiplier(rounds=200, sampling_rate=0.05)
    accountant = config.make_accountant()
    for _ in range(200):
        assert not accountant.would_exceed(3.0, 1e-5, noise_multiplier=z, sampling_rate=0.05)
        accountant.step(noise_multiplier=z, sampling_rate=0.05)
    assert accountant.epsilon(1e-5) <= 3.0


def test_local_mode_uses_the_local_scheme() -> None:
    config = DPConfig(clip_norm=1.0, delta=1e-5, noise_multiplier=2.0, mode="local", sampling="fixed")
    accountant = config.make_accountant(population=100)
    assert isinstance(accountant, Accountant) and accountant.sampling == "local"
    accountant.step(noise_multiplier=2.0)
    reference = Accountant(sampling="full")
    reference.step(noise_multiplier=1.0)
    assert accountant.epsilon(1e-5) == reference.epsilon(1e-5)
