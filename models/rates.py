"""The recurrence model: a decayed Gamma-Poisson rate of a pattern's episodes, its predictions,
and their rolling-origin backtest. Pure numpy over issue timestamps; no database here.

A pattern's issues are grouped into **episodes**: an issue more than EPISODE_GAP_S after the
pattern's previous one starts a new episode, so a burst of forty alerts in an hour counts as
one recurrence, not forty. Episodes arrive as a Poisson process whose daily rate λ is unknown:

    λ ~ Gamma(α0 + decayed episodes, β0 + decayed exposure in days)

where (α0, β0) is the workspace's own prior, fitted to its patterns' rates (fit_prior).

Evidence decays with a half-life of HALF_LIFE_DAYS (an episode d days old weighs 2^(-d/30),
and so does each day of exposure, so the rate follows change) and is read back HORIZON_DAYS at
most. The episode that created the pattern is its birth, not evidence of recurrence: it is not
counted, and exposure starts there. Over the next w days the number of episodes is then
negative binomial, NB(α, β/(β+w)):

    P(≥ 1 recurrence in w days) = 1 − (β / (β + w))^α
    expected issues             = mean episode size × α w / β
    interval                    = mean episode size × the 5% and 95% quantiles of that NB

Everything works on arrays of many patterns at once: `timestamps` (seconds) sorted by
(pattern index, time), `patterns` their pattern index, `births` one timestamp per pattern.
"""
import math

import numpy as np

DAY_S = 86_400.0
HALF_LIFE_DAYS = 30.0
TAU_DAYS = HALF_LIFE_DAYS / math.log(2)
HORIZON_DAYS = 180.0  # 6 half-lives: older evidence weighs under 1/64
EPISODE_GAP_S = 2 * 3600.0
PRIOR_ALPHA = 0.1  # a weak prior (0.1 episode in 7 days) for workspaces too small to fit their own
PRIOR_BETA = 7.0
MIN_PATTERNS_FOR_PRIOR = 5
MAX_PRIOR_DAYS = 30.0
INTERVAL = (0.05, 0.95)
WINDOWS = {"7d": 7, "30d": 30, "90d": 90}
ALERT_THRESHOLD = 0.70
HIGH_PROBABILITY = 0.80
LOG_LOSS_CLIP = 1e-3
BACKTEST_ORIGINS = {7: 26, 30: 12, 90: 8}  # half a year of weekly origins, a year of monthly ones


def evidence(at, timestamps, patterns, births, count):
    """(decayed recurrences, decayed exposure in days, mean episode size) per pattern index,
    from the issues before `at` (seconds)."""
    keep = (timestamps < at) & (timestamps >= at - HORIZON_DAYS * DAY_S)
    timestamps, patterns = timestamps[keep], patterns[keep]
    starts = np.ones(len(timestamps), bool)
    if len(timestamps) > 1:
        starts[1:] = (patterns[1:] != patterns[:-1]) | (np.diff(timestamps) > EPISODE_GAP_S)
    weights = np.exp(-(at - timestamps) / DAY_S / TAU_DAYS)
    birth = starts & (timestamps <= births[patterns] + EPISODE_GAP_S)
    recurrences = np.bincount(patterns[starts & ~birth], weights[starts & ~birth], count)
    episodes = np.bincount(patterns[starts], weights[starts], count)
    issues = np.bincount(patterns, weights, count)
    exposed_days = np.clip((at - np.maximum(births, at - HORIZON_DAYS * DAY_S)) / DAY_S, 0, None)
    exposure = TAU_DAYS * (1 - np.exp(-exposed_days / TAU_DAYS))
    size = np.where(episodes > 0, issues / np.maximum(episodes, 1e-12), 1.0)
    return recurrences, exposure, size


def fit_prior(recurrences, exposure):
    """The workspace's own prior (empirical Bayes): a Gamma matching the mean and the spread of
    its patterns' rates, the spread net of Poisson noise, by the method of moments. Falls back
    to the weak default with fewer than MIN_PATTERNS_FOR_PRIOR patterns exposed a week or more."""
    seen = exposure >= 7
    if seen.sum() < MIN_PATTERNS_FOR_PRIOR or recurrences[seen].sum() <= 0:
        return PRIOR_ALPHA, PRIOR_BETA
    n, e = recurrences[seen], exposure[seen]
    mean = n.sum() / e.sum()
    spread = np.average((n / e - mean) ** 2, weights=e) - mean * len(e) / e.sum()
    spread = max(spread, 0.05 * mean * mean)  # at least some heterogeneity
    beta = min(mean / spread, MAX_PRIOR_DAYS)  # never worth more than a month of a pattern's own history
    return max(mean * beta, 0.01), beta


def posterior(at, timestamps, patterns, births, count, prior=None):
    """(α, β, mean episode size) per pattern index from the issues before `at`, under `prior`
    ((α0, β0); default: fitted on these patterns by fit_prior)."""
    recurrences, exposure, size = evidence(at, timestamps, patterns, births, count)
    alpha0, beta0 = prior or fit_prior(recurrences, exposure)
    return alpha0 + recurrences, beta0 + exposure, size


def probability(alpha, beta, days):
    """P(≥ 1 episode in `days`)."""
    return 1.0 - np.power(beta / (beta + days), alpha)


def nb_quantile(q, r, p):
    """The q-quantile of NB(r, p) (pmf(0) = p^r), elementwise; a normal approximation past a
    mean of 200, where it is within a count or two."""
    r, p = np.broadcast_arrays(np.asarray(r, float), np.asarray(p, float))
    mean = r * (1 - p) / p
    if r.size <= 16:  # a few patterns (the write path): plain floats beat numpy's per-call cost
        return np.array([_quantile_of_one(q, float(a), float(b), float(m)) for a, b, m in
                         zip(r.ravel(), p.ravel(), mean.ravel())], np.int64).reshape(r.shape)
    result = np.full(r.shape, -1, np.int64)
    small = mean < 200
    if small.any():
        rs, ps = r[small], p[small]
        pmf = np.power(ps, rs)
        cdf = pmf.copy()
        found = np.where(cdf >= q, 0, -1)
        top = int((mean[small] + 12 * np.sqrt(mean[small] / ps)).max()) + 10
        for k in range(1, top + 1):
            if (found >= 0).all():
                break
            pmf = pmf * (k - 1 + rs) / k * (1 - ps)
            cdf += pmf
            found[(found < 0) & (cdf >= q)] = k
        found[found < 0] = top
        result[small] = found
    if (~small).any():
        sd = np.sqrt(mean[~small] / p[~small])
        z = {0.05: -1.6449, 0.95: 1.6449}.get(q, 0.0)
        result[~small] = np.maximum(0, np.round(mean[~small] + z * sd)).astype(np.int64)
    return result


def _quantile_of_one(q, r, p, mean):
    if mean >= 200:
        return max(0, round(mean + {0.05: -1.6449, 0.95: 1.6449}.get(q, 0.0) * math.sqrt(mean / p)))
    k, pmf = 0, p ** r
    cdf = pmf
    top = int(mean + 12 * math.sqrt(mean / p)) + 10
    while cdf < q and k < top:
        k += 1
        pmf *= (k - 1 + r) / k * (1 - p)
        cdf += pmf
    return k


def predict(alpha, beta, size, days):
    """Per pattern for a window of `days`: P(≥ 1), expected issues, and their 90% interval."""
    p = beta / (beta + days)
    lower, upper = (nb_quantile(q, alpha, p) * size for q in INTERVAL)
    return {"probability": probability(alpha, beta, days), "expected": size * alpha * days / beta,
            "lower": lower, "upper": upper}


def bucket_band(alpha, beta, size, bucket_days):
    """One pattern's (or a sum's) expected issues per bucket and its 90% band."""
    p = beta / (beta + bucket_days)
    lower, upper = (float(nb_quantile(q, alpha, p)) * size for q in INTERVAL)
    return size * alpha * bucket_days / beta, lower, upper


def backtest(timestamps, patterns, births, count, now, days, origins=None):
    """Rolling origin: at each origin t = now − k·days (k = 1..origins), predict P(≥ 1 in
    [t, t + days)) for every pattern born before t from the issues before t only, next to two
    baselines known at t: the base rate (the share of those patterns that recurred in the window
    before t) and persistence (it recurs iff it recurred in the window before t).
    Returns (predicted, base rate, persistence, outcome) arrays over every (origin, pattern)."""
    origins = origins or BACKTEST_ORIGINS.get(days, 12)
    width = days * DAY_S
    predicted, base, persisted, outcome = [], [], [], []
    for k in range(1, origins + 1):
        at = now - k * width
        alive = births < at
        if not alive.any():
            break
        alpha, beta, _ = posterior(at, timestamps, patterns, births, count)
        following = np.bincount(patterns[(timestamps >= at) & (timestamps < at + width)], minlength=count) > 0
        previous = np.bincount(patterns[(timestamps >= at - width) & (timestamps < at)], minlength=count) > 0
        predicted.append(probability(alpha, beta, days)[alive])
        persisted.append(previous[alive].astype(float))
        base.append(np.full(int(alive.sum()), previous[alive].mean()))
        outcome.append(following[alive].astype(float))
    join = (lambda parts: np.concatenate(parts) if parts else np.zeros(0))
    return join(predicted), join(base), join(persisted), join(outcome)


def scores(predicted, outcome, threshold=ALERT_THRESHOLD):
    """Brier score, log loss (probabilities clipped to [0.001, 0.999]) and recall at the threshold."""
    if not len(outcome):
        return {"brier": None, "log_loss": None, "recall_at_threshold": None}
    clipped = np.clip(predicted, LOG_LOSS_CLIP, 1 - LOG_LOSS_CLIP)
    recurred = outcome > 0.5
    return {
        "brier": round(float(np.mean((predicted - outcome) ** 2)), 4),
        "log_loss": round(float(-np.mean(outcome * np.log(clipped) + (1 - outcome) * np.log(1 - clipped))), 4),
        "recall_at_threshold": round(float((predicted[recurred] >= threshold).mean()), 4) if recurred.any() else None,
    }


def calibration(predicted, outcome):
    """Deciles of predicted probability: count, mean prediction, observed frequency; and the
    mean absolute gap across the non-empty deciles (plain, and weighted by count)."""
    bins, gaps, weighted = [], [], 0.0
    index = np.minimum((predicted * 10).astype(int), 9)
    for decile in range(10):
        inside = index == decile
        n = int(inside.sum())
        row = {"lower": decile / 10, "upper": (decile + 1) / 10, "count": n, "mean_predicted": None, "observed": None}
        if n:
            row["mean_predicted"] = round(float(predicted[inside].mean()), 4)
            row["observed"] = round(float(outcome[inside].mean()), 4)
            gap = abs(row["mean_predicted"] - row["observed"])
            gaps.append(gap)
            weighted += gap * n
        bins.append(row)
    total = len(predicted)
    return bins, (round(float(np.mean(gaps)), 4) if gaps else None), (round(weighted / total, 4) if total else None)
