"""Benchmark: a one-run privacy audit of fedra's DP-FedAvg (Steinke, Nasr and Jagielski 2023).

For each configuration the noise multiplier is calibrated so the accountant's epsilon for the run is the
target (Gaussian mechanism, every client in every round, ``delta = 1e-5``). Then ``m`` canary clients, each
included with probability 1/2, take part in a simulated run (:func:`fedra.privacy.canary_audit`: clip,
sum, Gaussian noise, fixed denominator, on synthetic updates; no training), the auditor guesses membership
from the released aggregate, and the audit's 95% lower bound on epsilon is printed

- with the calibrated noise, over several seeds: it must stay below the accountant's epsilon;
- for a control run with the same canaries and no noise: it must exceed the accountant's epsilon, which
  shows the audit is able to refute a wrong claim.

A one-run audit can certify at most its *ceiling*, the bound when every guess is right (about
``log(r)`` for ``r`` guesses, less the ``2 m delta`` term); a claim above the ceiling cannot be refuted by
any run, so for such rows only the first check applies (shown as ``n/a`` in the ``refutes`` column).

Usage::

    .venv/bin/python bench/bench_privacy_audit.py                  # the full table
    .venv/bin/python bench/bench_privacy_audit.py --quick          # one configuration
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from fedra.privacy import Accountant, audit_epsilon_lower_bound, calibrate_noise, canary_audit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one configuration, two seeds")
    parser.add_argument("--seeds", type=int, default=5, help="noised runs per configuration")
    args = parser.parse_args(argv)
    delta, confidence, clients, clip_norm = 1e-5, 0.95, 50, 1.0
    configs = [(2.0, 1, 1000, 200)] if args.quick else [
        (1.0, 1, 1000, 200), (2.0, 1, 1000, 200), (2.0, 5, 1000, 200), (4.0, 1, 5000, 1000),
        (4.0, 5, 5000, 1000), (8.0, 1, 5000, 2000),
    ]
    seeds = 2 if args.quick else args.seeds
    print(f"delta={delta}  confidence={confidence}  ordinary clients/round={clients}  C={clip_norm}")
    header = (f"{'target':>6} {'rounds':>6} {'canaries':>8} {'guesses':>7} {'z':>7} {'acct eps':>8} "
              f"{'audit eps (noised, per seed)':>34} {'max':>6} {'control':>12} {'ceiling':>7} {'refutes':>7}")
    print(header)
    all_ok = True
    started = time.perf_counter()
    for target, rounds, canaries, guesses in configs:
        z = calibrate_noise(target_epsilon=target, delta=delta, steps=rounds, sampling="full")
        accountant = Accountant(sampling="full")
        accountant.step(noise_multiplier=z, count=rounds)
        claimed = accountant.epsilon(delta)
        common = {"canaries": canaries, "clients": clients, "rounds": rounds, "clip_norm": clip_norm,
                  "guesses": guesses, "delta": delta, "confidence": confidence}
        noised = [canary_audit(noise_multiplier=z, rng=np.random.default_rng(seed), **common)  # type: ignore[arg-type]
                  for seed in range(seeds)]
        control = canary_audit(noise_multiplier=0.0, rng=np.random.default_rng(0), **common)  # type: ignore[arg-type]
        ceiling = audit_epsilon_lower_bound(canaries=canaries, guesses=guesses, correct=guesses, delta=delta,
                                            confidence=confidence)
        bounds = [r.epsilon_lower_bound for r in noised]
        refutes = control.epsilon_lower_bound > claimed
        all_ok &= max(bounds) < claimed and (refutes or ceiling <= claimed)
        verdict = "yes" if refutes else ("n/a" if ceiling <= claimed else "NO")
        shown = " ".join(f"{b:.2f}({r.correct})" for b, r in zip(bounds, noised, strict=True))
        print(f"{target:>6.1f} {rounds:>6} {canaries:>8} {guesses:>7} {z:>7.3f} {claimed:>8.3f} "
              f"{shown:>34} {max(bounds):>6.2f} {control.epsilon_lower_bound:>5.2f}({control.correct:>4}) "
              f"{ceiling:>7.2f} {verdict:>7}")
    print(f"(audit eps: 95% lower bound, correct guesses in brackets; control: no noise, "
          f"{time.perf_counter() - started:.1f} s)")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
