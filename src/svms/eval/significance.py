"""The statistics behind `svms eval compare`: intervals, tests and the label of each comparison.

Pure functions (numpy only), so every number in the report can be checked by hand:

- `wilson_interval(k, n)`: Wilson score interval of a success rate (correct near 0 and 1, unlike k/n ± 1.96·se).
- `newcombe_interval(k1, n1, k2, n2)`: CI of the difference of two rates from their Wilson intervals
  (Newcombe's method 10).
- `fisher_exact(table)`: two-sided Fisher exact test of a 2x2 table, in exact integer arithmetic: the sum of
  the hypergeometric probabilities of all tables with the observed margins that are no more likely than it.
- `paired_bootstrap(baseline, treatment)`: CI of the difference of mean errors on the same episodes.
  Identical runs of GR00T differ by 5-6 %, so seeds are a source of noise in their own right: each resample
  draws seeds with replacement within each arm (independently) and episodes with replacement (the same
  episodes for both arms, which keeps the pairing), then averages over the drawn seeds and episodes. With
  one seed per arm this reduces to the episode bootstrap; `label` calls that case underpowered anyway.
- `label(...)`: improved / regressed / no significant change / underpowered, with the rules below.
- `mde_relative(se)` and `mde_two_proportions(p0, n0, n1)`: the minimum detectable effect (two-sided test at
  `ALPHA`, power `POWER`): the smallest true change the study finds significant four times in five.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

#: The compared metrics (key → name in reports) and the scope of all tasks together.
METRICS = {"open_loop_mse": "open-loop MSE", "open_loop_mae": "open-loop MAE", "success": "closed-loop success"}
OVERALL = "overall"
ALPHA = 0.05
Z_95 = 1.959963984540054  # two-sided 95 % normal quantile
POWER = 0.8  # the minimum detectable effect is the change found significant with this probability
Z_POWER = NormalDist().inv_cdf(POWER)  # 0.8416
MIN_SEEDS = 2  # per arm: with one seed a difference cannot be told apart from seed-to-seed noise
MIN_EPISODES = 10  # paired episodes: fewer make the bootstrap CI too narrow to trust
MIN_TRIALS = 20  # closed-loop trials per arm
EQUIVALENCE_PCT = 10.0  # "no significant change" must rule out a change of this many % of the baseline error

IMPROVED, REGRESSED, NO_CHANGE, UNDERPOWERED = "improved", "regressed", "no significant change", "underpowered"


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of successes/trials; (0, 1) when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """95 % CI of the rate difference k1/n1 - k2/n2 (Newcombe hybrid score interval)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1)
    l2, u2 = wilson_interval(k2, n2)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def fisher_exact(table: tuple[tuple[int, int], tuple[int, int]]) -> float:
    """Two-sided p of Fisher's exact test for [[a, b], [c, d]] (rows: arms, columns: success, failure)."""
    (a, b), (c, d) = table
    if min(a, b, c, d) < 0:
        raise ValueError(f"a 2x2 table holds counts >= 0, got {table}")
    row1, row2, col1 = a + b, c + d, a + c
    # P(X = x) = C(row1, x) C(row2, col1 - x) / C(n, col1); the common denominator cancels in the comparison.
    weights = {x: math.comb(row1, x) * math.comb(row2, col1 - x)
               for x in range(max(0, col1 - row2), min(row1, col1) + 1)}
    observed = weights[a]
    total = sum(weights.values())
    return min(1.0, sum(w for w in weights.values() if w <= observed) / total)


def relative_change(new: float, reference: float) -> float:
    """100 * (new - reference) / reference; nan when the reference is 0."""
    return 100.0 * (new - reference) / reference if reference else math.nan


@dataclass(frozen=True)
class Bootstrap:
    """A bootstrap estimate: observed value, percentile 95 % CI, for differences a two-sided p, and the
    standard error (standard deviation of the resampled values), from which the MDE follows."""

    estimate: float
    lo: float
    hi: float
    p: float = math.nan
    se: float = math.nan


def _resample_means(values: np.ndarray, episode_w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mean of (seeds, episodes) `values` under resampled seeds and the given episode weights -> (R,)."""
    n_seeds = values.shape[0]
    seed_w = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=episode_w.shape[0]) / n_seeds
    return ((seed_w @ values) * episode_w).sum(axis=1)


def _episode_weights(n_episodes: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    return rng.multinomial(n_episodes, np.full(n_episodes, 1.0 / n_episodes), size=resamples) / n_episodes


def bootstrap_mean(values: np.ndarray, resamples: int = 10_000, seed: int = 0) -> Bootstrap:
    """Mean error of one arm, `values` (seeds, episodes), with a seed-and-episode bootstrap 95 % CI."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = _resample_means(values, _episode_weights(values.shape[1], resamples, rng), rng)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return Bootstrap(float(values.mean()), float(lo), float(hi))


def paired_bootstrap(baseline: np.ndarray, treatment: np.ndarray, resamples: int = 10_000,
                     seed: int = 0) -> tuple[Bootstrap, Bootstrap]:
    """Treatment - baseline mean error, absolute and in % of the baseline, paired by episode.

    `baseline` (seeds_b, episodes) and `treatment` (seeds_t, episodes) hold per-run, per-episode errors with
    the same episode in the same column. p is two-sided: 2 * min(P(diff <= 0), P(diff >= 0)) over resamples,
    at least 1 / resamples.
    """
    baseline = np.asarray(baseline, dtype=np.float64)
    treatment = np.asarray(treatment, dtype=np.float64)
    if baseline.shape[1] != treatment.shape[1]:
        raise ValueError(f"paired episodes differ: {baseline.shape[1]} vs {treatment.shape[1]}")
    rng = np.random.default_rng(seed)
    episode_w = _episode_weights(baseline.shape[1], resamples, rng)
    base = _resample_means(baseline, episode_w, rng)
    diff = _resample_means(treatment, episode_w, rng) - base
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = 100.0 * diff / base
    p = max(2.0 * min(np.mean(diff <= 0), np.mean(diff >= 0)), 1.0 / resamples)
    d_lo, d_hi = np.percentile(diff, [2.5, 97.5])
    r_lo, r_hi = np.percentile(rel, [2.5, 97.5])
    observed = float(treatment.mean() - baseline.mean())
    absolute = Bootstrap(observed, float(d_lo), float(d_hi), min(1.0, float(p)), float(np.std(diff, ddof=1)))
    relative = Bootstrap(relative_change(float(treatment.mean()), float(baseline.mean())), float(r_lo),
                         float(r_hi), absolute.p, float(np.std(rel, ddof=1)))
    return absolute, relative


def mde_relative(se: float) -> float:
    """Minimum detectable effect of a difference whose estimate has standard error `se` (any unit, here % of
    the baseline's error): (z_{1-ALPHA/2} + z_{POWER}) * se = 2.80 * se. A true change of that size lands
    beyond the 95 % CI's zero crossing with probability POWER (normal approximation of the bootstrap)."""
    return (Z_95 + Z_POWER) * se


def mde_two_proportions(p0: float, n0: int, n1: int) -> float:
    """Smallest change d of a success rate p0 (n0 trials) that n1 trials of the other arm detect: the root of
    z_{1-ALPHA/2} sqrt(pbar (1 - pbar) (1/n0 + 1/n1)) + z_{POWER} sqrt(p0 q0 / n0 + p1 q1 / n1) = d, with
    p1 = p0 ± d and pbar their trial-weighted mean (the two-proportion z-test without continuity correction;
    Fisher's exact test, which the labels use, is slightly more conservative). The change is taken towards 1/2,
    where the variance is larger, so the answer holds in both directions. nan when no change within [0, 1] is
    detectable with so few trials, including when even n1/n1 against 0/n0 is not significant by Fisher."""
    if n0 <= 0 or n1 <= 0 or fisher_exact(((n1, 0), (0, n0))) >= ALPHA:
        return math.nan
    sign = 1.0 if p0 <= 0.5 else -1.0
    reach = 1.0 - p0 if sign > 0 else p0
    d = np.linspace(0.0, reach, 20_001)[1:]
    p1 = p0 + sign * d
    pbar = (n0 * p0 + n1 * p1) / (n0 + n1)
    needed = (Z_95 * np.sqrt(pbar * (1 - pbar) * (1 / n0 + 1 / n1))
              + Z_POWER * np.sqrt(p0 * (1 - p0) / n0 + p1 * (1 - p1) / n1))
    found = np.flatnonzero(d >= needed)
    return float(d[found[0]]) if len(found) else math.nan


def label(*, seeds: tuple[int, int], n: int, min_n: int, delta: float, ci: tuple[float, float],
          higher_is_better: bool, p: float | None = None,
          equivalence: tuple[float, float] | None = None) -> str:
    """The verdict of one comparison of a treatment arm against the baseline; rules, in order:

    1. underpowered: fewer than `MIN_SEEDS` seeds in either arm, or fewer than `min_n` paired episodes
       (open loop, `MIN_EPISODES`) or trials per arm (closed loop, `MIN_TRIALS`).
    2. improved / regressed: significant, by the direction of `delta` (treatment - baseline) and whether
       higher is better (success) or lower is (error). Significant means `p < ALPHA` when a test's p is given
       (Fisher for success rates), otherwise the 95 % `ci` of `delta` excludes 0 (bootstrap for errors).
    3. otherwise no significant change, unless an `equivalence` band is given (errors: ±`EQUIVALENCE_PCT` %
       of the baseline, with `ci` in %) and the CI reaches outside it: then the data cannot rule out a change
       of that size, and the label is underpowered.
    """
    if min(seeds) < MIN_SEEDS or n < min_n:
        return UNDERPOWERED
    lo, hi = ci
    significant = p < ALPHA if p is not None else (lo > 0 or hi < 0)
    if significant:
        return IMPROVED if (delta > 0) == higher_is_better else REGRESSED
    if equivalence is not None and not (equivalence[0] < lo and hi < equivalence[1]):
        return UNDERPOWERED
    return NO_CHANGE
