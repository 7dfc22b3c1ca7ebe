"""Tests of the attack configuration: validation, the registry, choosing the malicious clients, dispatch."""

from __future__ import annotations

import numpy as np
import pytest

from fedra.attacks import (
    ATTACKS,
    AttackConfig,
    alie,
    apply_data_attack,
    apply_model_attack,
    min_sum,
    select_malicious,
    sign_flip,
)
from fedra.errors import ConfigError

KINDS = ["alie", "gaussian_noise", "ipm", "label_flip", "min_max", "min_sum", "scale", "sign_flip"]


def test_registry_lists_every_kind_with_its_paper() -> None:
    assert sorted(ATTACKS) == KINDS
    for name, kind in ATTACKS.items():
        assert kind.name == name and kind.citation
        assert (kind.run is None) == (kind.target == "data")
    assert {k for k, v in ATTACKS.items() if v.colludes} == {"alie", "ipm", "min_max", "min_sum"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "lie", "fraction": 0.1},
     r"attack.kind: expected one of alie, gaussian_noise, ipm, label_flip, min_max, min_sum, scale, sign_flip, got 'lie'"),
    ({"kind": "alie", "fraction": 1.0}, r"attack.fraction: expected a number in \[0, 1\), got 1.0"),
    ({"kind": "alie", "fraction": -0.1}, r"attack.fraction: expected a number in \[0, 1\), got -0.1"),
    ({"kind": "alie", "fraction": 0.1, "params": {"sigma": 1.0}},
     r"attack.params.sigma: expected a parameter of attack 'alie' \(none\), got 'sigma'"),
    ({"kind": "gaussian_noise", "fraction": 0.1, "params": {"sigma": -1.0}},
     "attack.params.sigma: expected a number > 0, got -1.0"),
    ({"kind": "gaussian_noise", "fraction": 0.1, "params": {"sigma": "big"}},
     "attack.params.sigma: expected a finite number, got 'big'"),
    ({"kind": "min_max", "fraction": 0.1, "params": {"perturbation": "cos"}},
     "attack.params.perturbation: expected one of unit, std, sign, got 'cos'"),
    ({"kind": "label_flip", "fraction": 0.1, "params": {"fraction_flipped": 2}},
     r"attack.params.fraction_flipped: expected a number in \[0, 1\], got 2"),
])
def test_config_names_the_field_the_value_and_what_is_allowed(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AttackConfig(**kwargs)  # type: ignore[arg-type]


def test_config_resolves_defaults_and_is_immutable() -> None:
    config = AttackConfig(kind="ipm", fraction=0.2)
    assert config.resolved == {"epsilon": 0.1} and config.target == "model"
    given = {"epsilon": 4.0}
    config = AttackConfig(kind="ipm", fraction=0.2, params=given)
    given["epsilon"] = 5.0
    assert config.resolved == {"epsilon": 4.0}
    with pytest.raises(TypeError):
        config.params["epsilon"] = 1.0  # type: ignore[index]


def test_select_malicious_is_deterministic_and_order_free() -> None:
    ids = [f"client-{i:02d}" for i in range(20)]
    chosen = select_malicious(ids, fraction=0.1, seed=7)
    assert len(chosen) == 2 and chosen == sorted(chosen) and set(chosen) <= set(ids)
    assert select_malicious(list(reversed(ids)), fraction=0.1, seed=7) == chosen
    assert len(select_malicious(ids[:10], fraction=0.3, seed=7)) == 3  # 0.3 * 10 is 3, not 2
    assert select_malicious(ids, fraction=0.0, seed=7) == []
    picks = {tuple(select_malicious(ids, fraction=0.25, seed=s)) for s in range(10)}
    assert len(picks) > 1  # the seed matters
    with pytest.raises(ConfigError, match="client_ids: expected unique str client ids"):
        select_malicious(["a", "a"], fraction=0.5, seed=0)
    with pytest.raises(ConfigError, match="seed: expected an int >= 0, got -1"):
        select_malicious(ids, fraction=0.5, seed=-1)


def updates(seed: int, count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"w": rng.standard_normal(4)} for _ in range(count)]


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "label_flip"])
def test_apply_model_attack_runs_every_model_kind(kind: str) -> None:
    own, honest = updates(1, 2), updates(2, 6)
    out = apply_model_attack(AttackConfig(kind=kind, fraction=0.25), malicious=own, honest=honest,
                             num_clients=8, rng=np.random.default_rng(0))
    assert len(out) == 2 and all(o["w"].shape == (4,) for o in out)


def test_apply_model_attack_passes_the_honest_updates_only_to_colluders() -> None:
    own, honest = updates(1, 2), updates(2, 6)
    rng = np.random.default_rng(0)
    knowing = apply_model_attack(AttackConfig(kind="alie", fraction=0.25), malicious=own, honest=honest,
                                 num_clients=8, rng=rng)
    np.testing.assert_array_equal(knowing[0]["w"], alie(own, num_clients=8, honest=honest)[0]["w"])
    blind = apply_model_attack(AttackConfig(kind="min_sum", fraction=0.25, collude=False), malicious=own,
                               honest=honest, num_clients=8, rng=rng)
    np.testing.assert_array_equal(blind[0]["w"], min_sum(own)[0]["w"])
    flipped = apply_model_attack(AttackConfig(kind="sign_flip", fraction=0.25), malicious=own, honest=honest,
                                 num_clients=8, rng=rng)
    np.testing.assert_array_equal(flipped[1]["w"], sign_flip(own)[1]["w"])


def test_data_and_model_attacks_are_not_mixed_up() -> None:
    flip = AttackConfig(kind="label_flip", fraction=0.1)
    assert flip.target == "data"
    np.testing.assert_array_equal(
        apply_data_attack(flip, labels=[0, 1, 2], num_classes=3, rng=np.random.default_rng(0)), [2, 1, 0]
    )
    with pytest.raises(ConfigError, match="expected a model-poisoning attack here, got 'label_flip'"):
        apply_model_attack(flip, malicious=updates(0, 1), honest=None, num_clients=4, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="expected a data-poisoning attack here, got 'ipm'"):
        apply_data_attack(AttackConfig(kind="ipm", fraction=0.1), labels=[0], num_classes=2,
                          rng=np.random.default_rng(0))
