"""Predictions: each pattern's chance of recurring in the next 7, 30 and 90 days (models/rates.py),
kept up to date as links change and by a periodic full recompute, never on a read path.

`recompute(workspace, pattern_ids)` runs inside the caller's transaction: `Pattern.links_changed`
calls it for the patterns a write touched (reading their issues of the last 180 days), and
`recompute_all()` (`flask predictions recompute`, scheduled by the worker) for every pattern,
since predictions move with time alone. A stored row changes only when one of its rounded
figures does; a move of the probability by 0.01 or more is announced as `prediction.updated`,
and every recompute hands the predictions it touched to the alert rules (models/alerts.py).
"""
import datetime

import numpy as np
import peewee as pw

from . import events, rates
from .accounts import Workspace
from .base import BaseModel, WorkspaceScoped, db, insert_rows, is_postgres, new_id, utcnow
from .issues import Issue
from .patterns import SEVERITY_WEIGHT, Pattern

PREDICTION_STATUSES = ("open", "confirmed", "dismissed")
FEEDBACK_STATUSES = PREDICTION_STATUSES[1:]
ANNOUNCED_CHANGE = 0.01  # a probability moving less than this is stored, not announced
# A row is rewritten when one of these moves at the precision shown; the posterior it keeps for
# the forecast's band (alpha, beta, episode_size) drifts with every second and rides along.
SHOWN = ("probability", "expected_count", "interval_lower", "interval_upper", "impact")
EPOCH = datetime.datetime(1970, 1, 1)


class PredictionSettings(BaseModel):
    """Per workspace: when all its predictions were last computed, and `as_of`, a fixed present for
    a workspace whose data stopped at a known date (the mock seed's is 2024-01-15): its clock is
    then the later of `as_of` and its newest issue, rather than the wall clock."""

    workspace = pw.ForeignKeyField(Workspace, primary_key=True, on_delete="CASCADE")
    as_of = pw.DateTimeField(null=True)
    computed_at = pw.DateTimeField(null=True)
    # The workspace's fitted prior (rates.fit_prior), from its last full recompute: what a
    # recompute of a few patterns uses.
    prior_alpha = pw.DoubleField(null=True)
    prior_beta = pw.DoubleField(null=True)


class Prediction(WorkspaceScoped, BaseModel):
    KIND = "Prediction"
    ID_PREFIX = "prd"
    id = pw.CharField(primary_key=True, max_length=40)
    workspace = pw.ForeignKeyField(Workspace, on_delete="CASCADE")
    pattern = pw.ForeignKeyField(Pattern, backref="predictions", on_delete="CASCADE")
    window_days = pw.SmallIntegerField()
    probability = pw.DoubleField()
    expected_count = pw.DoubleField()
    interval_lower = pw.DoubleField()
    interval_upper = pw.DoubleField()
    impact = pw.DoubleField()
    status = pw.CharField(max_length=16, default="open")
    feedback_reason = pw.TextField(null=True)
    feedback_at = pw.DateTimeField(null=True)
    # The pattern's posterior (rates.py), for the forecast's per-bucket band.
    alpha = pw.DoubleField()
    beta = pw.DoubleField()
    episode_size = pw.DoubleField()
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        # Migrations own the schema; these mirror the indexes they create.
        indexes = (
            (("pattern", "window_days"), True),
            (("workspace", "probability", "id"), False),
            (("workspace", "impact", "id"), False),
        )

    @property
    def interval(self):
        return {"lower": self.interval_lower, "upper": self.interval_upper}

    @property
    def feedback(self):
        return None if self.feedback_reason is None else {"reason": self.feedback_reason, "at": self.feedback_at}

    @classmethod
    def search(cls, workspace_id, filters):
        query = cls.in_workspace(workspace_id)
        if filters.get("window_days"):
            query = query.where(cls.window_days.in_(filters["window_days"]))
        if filters.get("min_probability") is not None:
            query = query.where(cls.probability >= filters["min_probability"])
        if filters.get("pattern_id"):
            query = query.where(cls.pattern.in_(filters["pattern_id"]))
        if filters.get("status"):
            query = query.where(cls.status.in_(filters["status"]))
        return query

    @classmethod
    def give_feedback(cls, prediction_id, workspace_id, status, reason):
        """A person confirms or dismisses a prediction; it keeps that status as it is recomputed."""
        with events.transaction():
            prediction = cls.get_in_workspace(prediction_id, workspace_id, lock=True)
            prediction.status, prediction.feedback_reason = status, reason
            prediction.feedback_at = prediction.updated_at = utcnow()
            prediction.save()
            events.record(workspace_id, "prediction.updated", prediction=prediction, changed=["status"])
        return prediction


Prediction.SORTS = {"probability": Prediction.probability, "impact": Prediction.impact}


def settings(workspace_id):
    return PredictionSettings.get_or_none(PredictionSettings.workspace == workspace_id)


def clock(workspace_id):
    """The present of the workspace's data (see PredictionSettings)."""
    found = settings(workspace_id)
    if found is None or found.as_of is None:
        return utcnow()
    newest = Issue.in_workspace(workspace_id).select(pw.fn.MAX(Issue.created_at)).scalar()
    newest = Issue.created_at.python_value(newest) if isinstance(newest, str) else newest
    return max(found.as_of, newest) if newest else found.as_of


def seconds(moment):
    return (moment - EPOCH).total_seconds()


def _epoch_column():
    if is_postgres():
        return "EXTRACT(EPOCH FROM created_at)::float8"
    return "CAST(strftime('%s', created_at) AS INTEGER)"


def issue_times(workspace_id, pattern_ids=None, since=None):
    """[(pattern id, created_at in epoch seconds)] of the workspace's linked issues."""
    if pattern_ids is None:
        sql = f'SELECT pattern_id, {_epoch_column()} FROM "issue" WHERE workspace_id = {db.param} AND pattern_id IS NOT NULL'
        params = [workspace_id]
    else:  # the patterns are the workspace's: the (pattern, created_at) index alone answers, covering
        sql = f'SELECT pattern_id, {_epoch_column()} FROM "issue" WHERE pattern_id IN ({", ".join([db.param] * len(pattern_ids))})'
        params = list(pattern_ids)
    if since is not None:
        sql += f" AND created_at >= {db.param}"
        params.append(Issue.created_at.db_value(since))
    return db.execute_sql(sql, params).fetchall()


class History:
    """Patterns (non-merged, with issues) and their issues' times as the arrays rates.py takes."""

    def __init__(self, workspace_id, pattern_ids=None, since=None):
        query = (Pattern.in_workspace(workspace_id)
                 .select(Pattern.id, Pattern.created_at, *(getattr(Pattern, f"linked_{name}") for name in SEVERITY_WEIGHT))
                 .where((Pattern.status != "merged") & (Pattern.issue_count > 0)).order_by(Pattern.id))
        if pattern_ids is not None:
            query = query.where(Pattern.id.in_(list(pattern_ids)))
        self.patterns = list(query)
        self.ids = [pattern.id for pattern in self.patterns]
        index = {pattern_id: i for i, pattern_id in enumerate(self.ids)}
        rows = [(index[pid], float(at)) for pid, at in issue_times(workspace_id, self.ids if pattern_ids is not None else None, since)
                if pid in index] if self.ids else []
        pidx = np.fromiter((i for i, _ in rows), np.int64, len(rows))
        times = np.fromiter((at for _, at in rows), np.float64, len(rows))
        order = np.lexsort((times, pidx))
        self.patterns_index, self.times = pidx[order], times[order]
        births = np.array([seconds(pattern.created_at) for pattern in self.patterns], np.float64)
        firsts = np.full(len(self.ids), np.inf)
        np.minimum.at(firsts, self.patterns_index, self.times)
        self.births = np.minimum(births, firsts)
        total = np.array([sum(pattern.linked_by_severity.values()) for pattern in self.patterns], np.float64)
        weighted = np.array([sum(SEVERITY_WEIGHT[name] * n for name, n in pattern.linked_by_severity.items())
                             for pattern in self.patterns], np.float64)
        self.severity = np.where(total > 0, weighted / np.maximum(total, 1), 0.0)

    def evidence(self, at):
        return rates.evidence(seconds(at), self.times, self.patterns_index, self.births, len(self.ids))


def recompute(workspace_id, pattern_ids=None, now=None, announce=True):
    """Recompute the predictions of `pattern_ids` (all the workspace's when None), inside the
    caller's events.transaction(); then evaluate the alert rules on them. Returns how many rows
    changed. Loaders pass `announce=False`: no events, no alerts."""
    from . import alerts

    if pattern_ids is not None and not pattern_ids:
        return 0
    now = now or clock(workspace_id)
    since = now - datetime.timedelta(days=rates.HORIZON_DAYS)
    history = History(workspace_id, pattern_ids, since)
    recurrences, exposure, size = history.evidence(now)
    found = settings(workspace_id)
    if pattern_ids is None:
        prior = rates.fit_prior(recurrences, exposure)
    elif found is not None and found.prior_alpha is not None:
        prior = found.prior_alpha, found.prior_beta
    else:
        prior = rates.PRIOR_ALPHA, rates.PRIOR_BETA
    alpha, beta = prior[0] + recurrences, prior[1] + exposure
    computed = {}
    for days in rates.WINDOWS.values():
        figures = rates.predict(alpha, beta, size, days)
        for i, pattern_id in enumerate(history.ids):
            computed[(pattern_id, days)] = {
                "probability": round(float(figures["probability"][i]), 4),
                "expected_count": round(float(figures["expected"][i]), 2),
                "interval_lower": round(float(figures["lower"][i]), 2),
                "interval_upper": round(float(figures["upper"][i]), 2),
                "impact": round(float(figures["expected"][i] * history.severity[i]), 3),
                "alpha": round(float(alpha[i]), 6), "beta": round(float(beta[i]), 6),
                "episode_size": round(float(size[i]), 4)}
    stored = Prediction.in_workspace(workspace_id)
    if pattern_ids is not None:
        stored = stored.where(Prediction.pattern.in_(list(pattern_ids)))
    existing = {(row.pattern_id, row.window_days): row for row in stored}
    gone = [row.id for key, row in existing.items() if key not in computed]
    if gone:  # the pattern emptied or was merged: what fired for it is re-armed
        alerts.Alert.delete().where(alerts.Alert.prediction_id.in_(gone)).execute()
        Prediction.delete().where(Prediction.id.in_(gone)).execute()
    inserts, updates, touched = [], [], []
    stamp = utcnow()
    for (pattern_id, days), figures in computed.items():
        row = existing.get((pattern_id, days))
        if row is None:
            row = Prediction(id=new_id("prd"), workspace=workspace_id, pattern=pattern_id, window_days=days,
                             created_at=stamp, updated_at=stamp, status="open", **figures)
            inserts.append(row)
            moved = True
        else:
            before = row.probability
            if all(getattr(row, name) == figures[name] for name in SHOWN):
                touched.append(row)
                continue
            for name, value in figures.items():
                setattr(row, name, value)
            row.updated_at = stamp
            updates.append(row)
            moved = abs(row.probability - before) >= ANNOUNCED_CHANGE
            touched.append(row)
        if announce and moved:
            events.record(workspace_id, "prediction.updated", prediction=row, changed=["probability"])
    fields = ["probability", "expected_count", "interval_lower", "interval_upper", "impact", "alpha", "beta",
              "episode_size", "updated_at"]
    insert_rows(Prediction, [row.__data__ for row in inserts])
    if updates:
        sql = 'UPDATE "prediction" SET {} WHERE id = {}'.format(
            ", ".join(f"{name} = {db.param}" for name in fields), db.param)
        params = [[Prediction._meta.fields[name].db_value(getattr(row, name)) for name in fields] + [row.id]
                  for row in updates]
        with pw.__exception_wrapper__:
            db.cursor().executemany(sql, params)
    touched += inserts
    if pattern_ids is None:  # only a full recompute: on the write path this row would serialize every writer
        kept = {PredictionSettings.computed_at: stamp, PredictionSettings.prior_alpha: prior[0],
                PredictionSettings.prior_beta: prior[1]}
        PredictionSettings.insert(workspace=workspace_id, **{f.name: v for f, v in kept.items()}).on_conflict(
            conflict_target=[PredictionSettings.workspace], update=kept).execute()
    if announce:
        alerts.evaluate(workspace_id, touched, full=pattern_ids is None)
    return len(inserts) + len(updates) + len(gone)


def recompute_all():
    """Every workspace's predictions afresh, one transaction per workspace; returns
    {workspace id: rows changed}. The worker schedules it; `flask predictions recompute` runs it."""
    changed = {}
    with db.connection_context():
        for (workspace_id,) in Workspace.select(Workspace.id).order_by(Workspace.id).tuples():
            with events.transaction():
                changed[workspace_id] = recompute(workspace_id)
    return changed


def summary(workspace_id, days):
    rows = Prediction.in_workspace(workspace_id).where(Prediction.window_days == days)
    stats = rows.select(pw.fn.COUNT(Prediction.id), pw.fn.AVG(Prediction.probability),
                        pw.fn.SUM(pw.Case(None, [(Prediction.probability >= rates.HIGH_PROBABILITY, 1)], 0)),
                        pw.fn.SUM(pw.Case(None, [(Prediction.probability >= rates.ALERT_THRESHOLD, 1)], 0))).tuples()[0]
    total, average, high, above = stats
    found = settings(workspace_id)
    return {"window": f"{days}d", "total": total, "high_probability": int(high or 0),
            "above_threshold": int(above or 0), "average_probability": round(float(average or 0), 4),
            "alert_threshold": rates.ALERT_THRESHOLD, "high_probability_threshold": rates.HIGH_PROBABILITY,
            "generated_at": found and found.computed_at}


def _bucket_start(moment, hourly):
    return moment.replace(minute=0, second=0, microsecond=0) if hourly else moment.replace(
        hour=0, minute=0, second=0, microsecond=0)


def forecast(workspace_id, days, pattern_id=None):
    """Observed issues per bucket over the last `days` (hourly for 7 days, else daily) ending with
    the present's bucket, then the projection over as many buckets with its 90% band; for one
    pattern or the whole workspace (the sum of its patterns)."""
    now = clock(workspace_id)
    hourly = days == 7
    step = datetime.timedelta(hours=1) if hourly else datetime.timedelta(days=1)
    count = days * 24 if hourly else days
    today = _bucket_start(now, hourly)
    first = today - step * (count - 1)
    rows = Prediction.in_workspace(workspace_id).where(Prediction.window_days == days)
    if pattern_id is not None:
        rows = rows.where(Prediction.pattern == pattern_id)
    rows = list(rows)
    timestamps = [at for pid, at in issue_times(workspace_id, [pattern_id] if pattern_id else None,
                                                since=first)]
    observed = np.bincount(((np.array(timestamps, np.float64) - seconds(first)) // step.total_seconds()).astype(
        np.int64), minlength=count)[:count] if timestamps else np.zeros(count, np.int64)
    bucket_days = step.total_seconds() / rates.DAY_S
    mean, lower, upper = _band(rows, bucket_days)
    points = [{"bucket_ts": first + step * i, "value": float(observed[i]), "lower": float(observed[i]),
               "upper": float(observed[i]), "kind": "observed"} for i in range(count)]
    points += [{"bucket_ts": today + step * (i + 1), "value": round(mean, 3), "lower": round(lower, 3),
                "upper": round(upper, 3), "kind": "projected"} for i in range(count)]
    alphas = np.array([row.alpha for row in rows]) if rows else np.zeros(0)
    betas = np.array([row.beta for row in rows]) if rows else np.ones(0)
    cumulative = [1.0 - float(np.prod(np.power(betas / (betas + bucket_days * (i + 1)), alphas)))
                  for i in range(count)]
    probability = cumulative[-1] if rows else 0.0
    first_breach = next((today + step * (i + 1) for i, p in enumerate(cumulative) if p >= rates.ALERT_THRESHOLD), None)
    found = settings(workspace_id)
    return {
        "window": f"{days}d", "points": points, "today_index": count - 1,
        "axis": {"bucket": "hour" if hourly else "day", "unit": "issues",
                 "y_max": max([point["upper"] for point in points] + [1.0])},
        "alert_threshold": rates.ALERT_THRESHOLD,
        "generated_at": (found and found.computed_at) or utcnow(),
        "breach": {"probability": round(probability, 4), "above_threshold": probability >= rates.ALERT_THRESHOLD,
                   "first_bucket_ts": first_breach},
    }


def _band(rows, bucket_days):
    """Expected issues per bucket and a 90% band: a negative binomial in episodes, matched to
    the sum's mean and variance when there are several patterns, times the mean episode size."""
    if not rows:
        return 0.0, 0.0, 0.0
    if len(rows) == 1:
        row = rows[0]
        return rates.bucket_band(row.alpha, row.beta, row.episode_size, bucket_days)
    episodes = [row.alpha * bucket_days / row.beta for row in rows]
    issues = sum(row.episode_size * e for row, e in zip(rows, episodes))
    mean = sum(episodes)
    variance = sum(e + e * e / row.alpha for row, e in zip(rows, episodes))
    if mean <= 0:
        return 0.0, 0.0, 0.0
    shape = mean * mean / max(variance - mean, 1e-9)
    lower, upper = (float(rates.nb_quantile(q, shape, shape / (shape + mean))) * issues / mean
                    for q in rates.INTERVAL)
    return issues, lower, upper


def accuracy(workspace_id, days):
    """The rolling-origin backtest (rates.backtest) on the workspace's own history."""
    history = History(workspace_id)
    now = clock(workspace_id)
    predicted, base, persisted, outcome = rates.backtest(
        history.times, history.patterns_index, history.births, len(history.ids), seconds(now), days)
    bins, error, weighted = rates.calibration(predicted, outcome)
    model = {**rates.scores(predicted, outcome), "calibration_error": error, "weighted_calibration_error": weighted,
             "calibration": bins}
    baselines = {"base_rate": rates.scores(base, outcome), "last_window": rates.scores(persisted, outcome)}

    def gain(name):
        theirs, ours = baselines[name]["brier"], model["brier"]
        return round(1 - ours / theirs, 4) if theirs and ours is not None else None

    return {"window": f"{days}d", "alert_threshold": rates.ALERT_THRESHOLD,
            "origins": rates.BACKTEST_ORIGINS.get(days, 12), "samples": int(len(outcome)),
            "recurrence_rate": round(float(outcome.mean()), 4) if len(outcome) else None,
            "model": model, "baselines": baselines,
            "brier_improvement": {"base_rate": gain("base_rate"), "last_window": gain("last_window")},
            "generated_at": utcnow()}
