"""Tests of anomaly detection over rounds: suspicion, quarantine of repeat offenders, events and state.

A staged federation: 20 clients, 2 of them sign-flipping every round they are sampled. Scores come from
:func:`fedra.aggregation.update_scores` against the coordinate-wise median, as a strategy would compute
them; the policy must quarantine exactly the attackers, say why, and never an honest client.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedra.aggregation import coordinate_median, update_scores
from fedra.attacks import scale, select_malicious, sign_flip
from fedra.errors import ConfigError, StateError
from fedra.strategy._anomaly import (
    QuarantineEvent,
    QuarantinePolicy,
    ReputationState,
    quarantine_report,
)

CLIENTS = [f"client-{i:02d}" for i in range(20)]


def honest_update(rng: np.random.Generator, direction: np.ndarray) -> dict[str, np.ndarray]:
    return {"w": direction + 0.8 * rng.standard_normal(direction.shape), "b": 0.1 + 0.05 * rng.standard_normal(3)}


def run(
    policy: QuarantinePolicy, *, rounds: int, attack: str, seed: int = 0
) -> tuple[list[str], list[QuarantineEvent], ReputationState, list[set[str]]]:
    """Play ``rounds`` rounds; return the attackers, every event, the final state and who took part."""
    rng = np.random.default_rng(seed)
    malicious = select_malicious(CLIENTS, fraction=0.1, seed=seed)
    state = ReputationState()
    events: list[QuarantineEvent] = []
    sampled: list[set[str]] = []
    for r in range(rounds):
        state, released = policy.begin_round(state, round=r)
        events += released
        ids = [c for c in CLIENTS if c not in state.quarantined()]
        sampled.append(set(ids))
        direction = np.ones(40) + 0.2 * rng.standard_normal(40)
        ups = [honest_update(rng, direction) for _ in ids]
        bad = [i for i, c in enumerate(ids) if c in malicious]
        if bad:
            own = [ups[i] for i in bad]
            poisoned = sign_flip(own) if attack == "sign_flip" else scale(own, num_clients=len(ids))
            for i, p in zip(bad, poisoned, strict=True):
                ups[i] = p
        scores = update_scores(ups, aggregate=coordinate_median(ups), num_neighbours=len(ids) - 4)
        state, decided = policy.observe(state, round=r, client_ids=ids, scores=scores)
        events += decided
    return malicious, events, state, sampled


def test_sign_flippers_are_quarantined_with_reasons_and_no_honest_client_is() -> None:
    policy = QuarantinePolicy()
    malicious, events, state, sampled = run(policy, rounds=30, attack="sign_flip")
    assert len(malicious) == 2
    quarantines = [e for e in events if e.action == "quarantine"]
    # decay 0.8, +1 per flagged round, threshold 2: 1, 1.8, 2.44 -> quarantined in the third round (round 2)
    first = [e for e in quarantines if e.round == 2]
    assert sorted(e.client for e in first) == malicious
    for e in first:
        assert e.until == 2 + 1 + 10
        assert "cosine to the aggregate" in e.reason and "reached the threshold 2" in e.reason
        assert e.scores["cosine"] < 0 and e.scores["z_cosine"] < -policy.z_threshold
        assert e.suspicion == pytest.approx(2.44)
        assert set(e.scores) == {"norm", "cosine", "peer_distance", "z_norm", "z_cosine", "z_peer_distance"}
    # excluded from sampling while quarantined, released at round 13, and (still attacking) quarantined
    # again three rounds later for twice as long
    for r in range(3, 13):
        assert not sampled[r] & set(malicious)
    releases = [e for e in events if e.action == "release"]
    assert sorted((e.round, e.client) for e in releases) == [(13, c) for c in malicious]
    second = [e for e in quarantines if e.round > 2]
    assert sorted((e.round, e.client, e.until) for e in second) == [(15, c, 15 + 1 + 20) for c in malicious]
    assert state.quarantined() == frozenset(malicious)
    assert dict(state.quarantines) == {c: 2 for c in malicious}
    report = quarantine_report(events, malicious=malicious)
    assert report.false_quarantines == 0 and report.falsely_quarantined == ()
    assert report.quarantined_malicious == tuple(malicious) and report.missed_malicious == ()
    assert json.loads(json.dumps(report.to_dict()))["false_quarantines"] == 0
    line = json.loads(json.dumps(first[0].to_dict()))
    assert line["event"] == "client_quarantine" and line["client"] == first[0].client


def test_scaled_updates_are_caught_by_their_norm() -> None:
    malicious, events, _, _ = run(QuarantinePolicy(), rounds=4, attack="scale", seed=3)
    quarantines = [e for e in events if e.action == "quarantine"]
    assert sorted(e.client for e in quarantines) == malicious
    assert all(e.round == 2 and e.reason.startswith("norm ") for e in quarantines)


def test_one_bad_round_does_not_quarantine_an_honest_client() -> None:
    rng = np.random.default_rng(8)
    policy = QuarantinePolicy()
    state = ReputationState()
    ids = CLIENTS[:10]
    for r in range(6):
        direction = np.ones(40)
        ups = [honest_update(rng, direction) for _ in ids]
        if r in (0, 2, 5):  # flagged every other round or so: suspicion 1, 0.64 + 1, ..., never 2
            ups[0] = sign_flip([ups[0]])[0]
        scores = update_scores(ups, aggregate=coordinate_median(ups), num_neighbours=6)
        state, events = policy.observe(state, round=r, client_ids=ids, scores=scores)
        assert events == []
    assert state.suspicion[ids[0]] == pytest.approx(1 + 0.8**3 * (1 + 0.8**2))
    assert ids[0] not in state.quarantined()


def test_small_rounds_are_not_scored() -> None:
    ups = [{"w": np.array([1.0, 1.0])}, {"w": np.array([1.1, 0.9])}, {"w": np.array([-50.0, -50.0])}]
    scores = update_scores(ups, aggregate=coordinate_median(ups), num_neighbours=1)
    state, events = QuarantinePolicy().observe(ReputationState(), round=0, client_ids=["a", "b", "c"],
                                               scores=scores)
    assert events == [] and state == ReputationState()


def test_state_round_trips_exactly_through_json() -> None:
    _, _, state, _ = run(QuarantinePolicy(), rounds=16, attack="sign_flip", seed=1)
    text = state.to_json()
    back = ReputationState.from_json(text)
    assert back == state and back.to_json() == text
    assert dict(back.suspicion) == dict(state.suspicion)  # floats bit for bit
    assert ReputationState.from_json(ReputationState().to_json()) == ReputationState()


@pytest.mark.parametrize(("text", "message"), [
    ("not json", "reputation state: expected a JSON document"),
    ('{"version": 2}', "reputation state: expected version 1, got 2"),
    ('[1]', "reputation state: expected version 1, got 'list'"),
    ('{"version": 1, "suspicion": {"a": -1}, "quarantined_until": {}, "quarantines": {}}',
     r"reputation state suspicion\['a'\]: expected a float >= 0, got -1"),
    ('{"version": 1, "suspicion": {}, "quarantined_until": {"a": 1.5}, "quarantines": {}}',
     r"reputation state quarantined_until\['a'\]: expected a int >= 0, got 1.5"),
    ('{"version": 1, "suspicion": {}, "quarantined_until": {}}',
     "reputation state quarantines: expected an object, got None"),
])
def test_state_from_json_rejects_what_it_did_not_write(text: str, message: str) -> None:
    with pytest.raises(StateError, match=message):
        ReputationState.from_json(text)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"decay": 1.0}, r"quarantine.decay: expected a number in \[0, 1\), got 1.0"),
    ({"z_threshold": 0}, r"quarantine.z_threshold: expected a number in \(0, inf\)"),
    ({"backoff": 0.5}, r"quarantine.backoff: expected a number in \[1, inf\), got 0.5"),
    ({"quarantine_rounds": 0}, "quarantine.quarantine_rounds: expected an int >= 1, got 0"),
])
def test_policy_validates_its_parameters(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        QuarantinePolicy(**kwargs)  # type: ignore[arg-type]


def test_observe_needs_one_unique_id_per_score() -> None:
    ups = [{"w": np.array([float(i)])} for i in range(5)]
    scores = update_scores(ups, aggregate=ups[0], num_neighbours=1)
    with pytest.raises(ConfigError, match="client_ids: expected 5 unique ids"):
        QuarantinePolicy().observe(ReputationState(), round=0, client_ids=["a"] * 5, scores=scores)


def test_a_quarantined_clients_update_is_ignored() -> None:
    state = ReputationState(suspicion={"c": 2.5}, quarantined_until={"c": 9}, quarantines={"c": 1})
    ups = [{"w": np.array([1.0 + 0.01 * i, 1.0])} for i in range(5)] + [{"w": np.array([-40.0, -40.0])}]
    ids = ["a", "b", "d", "e", "f", "c"]
    scores = update_scores(ups, aggregate=coordinate_median(ups), num_neighbours=3)
    new, events = QuarantinePolicy().observe(state, round=4, client_ids=ids, scores=scores)
    assert events == [] and new.quarantined_until == state.quarantined_until
    assert new.suspicion["c"] == 2.5
    released, events = QuarantinePolicy().begin_round(new, round=9)
    assert [(e.action, e.client) for e in events] == [("release", "c")]
    assert released.quarantined() == frozenset() and "c" not in released.suspicion
    assert released.quarantines == {"c": 1}  # remembered: the next quarantine lasts longer
