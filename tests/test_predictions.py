"""Predictions: the recurrence model, its recompute as links change, the list, summary, forecast,
frequency, backtest and feedback routes."""
import datetime

import numpy as np
import pytest

from conftest import OTHER_WORKSPACE, SEED_WORKSPACE
from models import Event, Prediction, db, events, predictions, rates
from test_errors import assert_envelope

SEED_PATTERN, THEIR_PATTERN = "pat_01xyz789", "pat_02pqr111"
DAY = rates.DAY_S


def seven_day(app, pattern_id):
    with app.app_context(), db.connection_context():
        return Prediction.get((Prediction.pattern == pattern_id) & (Prediction.window_days == 7))


# --- the model ------------------------------------------------------------------------------

def test_a_steady_pattern_is_predicted_at_its_rate():
    rng = np.random.default_rng(3)
    now = 400 * DAY
    times = np.sort(rng.uniform(0, now, 160))  # 0.4 a day
    alpha, beta, size = rates.posterior(now, times, np.zeros(len(times), np.int64), np.array([times[0]]), 1)
    assert alpha[0] / beta[0] == pytest.approx(0.4, rel=0.35)  # decayed evidence: some 17 recent episodes
    assert size[0] == pytest.approx(1.0, abs=0.05)
    assert rates.probability(alpha, beta, 7)[0] > 0.75


def test_a_burst_counts_as_one_recurrence():
    now = 30 * DAY
    burst = 20 * DAY + np.arange(40) * 60.0  # forty issues in forty minutes
    times = np.concatenate([[0.0], burst])
    alpha, beta, size = rates.posterior(now, times, np.zeros(len(times), np.int64), np.array([0.0]), 1)
    assert alpha[0] == pytest.approx(rates.PRIOR_ALPHA + 2 ** (-10 / rates.HALF_LIFE_DAYS), rel=0.01)
    assert size[0] > 10  # yet the expected count carries the burst's size
    assert rates.probability(alpha, beta, 7)[0] < 0.3


def test_the_pattern_that_created_itself_is_not_evidence_of_recurrence():
    alpha, beta, _ = rates.posterior(10 * DAY, np.array([9 * DAY]), np.zeros(1, np.int64), np.array([9 * DAY]), 1)
    assert alpha[0] == rates.PRIOR_ALPHA and beta[0] == pytest.approx(rates.PRIOR_BETA + 1, rel=0.02)


def test_the_interval_holds_the_expected_count():
    figures = rates.predict(np.array([3.0, 400.0]), np.array([10.0, 20.0]), np.array([1.0, 2.0]), 7)
    assert (figures["lower"] <= figures["expected"]).all() and (figures["expected"] <= figures["upper"]).all()


# --- recompute --------------------------------------------------------------------------------

def test_the_seed_pattern_has_a_prediction_for_each_window(app):
    with app.app_context(), db.connection_context():
        windows = sorted(p.window_days for p in Prediction.select().where(Prediction.pattern == SEED_PATTERN))
    assert windows == [7, 30, 90]
    assert 0.5 < seven_day(app, SEED_PATTERN).probability < 0.99


def test_linking_issues_recomputes_the_pattern_and_announces_it(app, client, auth):
    before = seven_day(app, "pat_01xyz793").probability
    for n in range(3):
        response = client.post("/v1/issues", headers=auth(), json={"title": f"Again {n}", "pattern_id": "pat_01xyz793"})
        assert response.status_code == 201
    after = seven_day(app, "pat_01xyz793")
    assert after.probability != before
    with app.app_context(), db.connection_context():
        announced = [e.payload["prediction"]["id"] for e in Event.select().where(Event.type == "prediction.updated")]
    assert after.id in announced


def test_recompute_all_changes_nothing_when_nothing_changed(app):
    with app.app_context():
        predictions.recompute_all()
        assert predictions.recompute_all() == {SEED_WORKSPACE: 0, OTHER_WORKSPACE: 0}


def test_the_recompute_command_reports_each_workspace(app):
    result = app.test_cli_runner().invoke(args=["predictions", "recompute"])
    assert result.exit_code == 0, result.output
    assert f"{SEED_WORKSPACE}:" in result.output and "recomputed 2 workspaces" in result.output


# --- the routes -------------------------------------------------------------------------------

def test_predictions_are_listed_likeliest_first_and_filtered(client, auth):
    body = client.get("/v1/predictions?window_days=7&min_probability=0.3", headers=auth()).get_json()
    listed = [item["probability"] for item in body["data"]]
    assert listed == sorted(listed, reverse=True) and min(listed) >= 0.3
    assert {item["window_days"] for item in body["data"]} == {7}
    assert body["page"]["total"] == len(listed)


def test_the_prediction_list_pages_by_cursor_over_every_row_once(client, auth):
    seen, cursor = [], None
    while True:
        query = {"limit": 4, "sort": "-impact", **({"cursor": cursor} if cursor else {})}
        body = client.get("/v1/predictions", headers=auth(), query_string=query).get_json()
        seen += [item["id"] for item in body["data"]]
        cursor = body["page"]["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == body["page"]["total"] == 18  # 6 patterns x 3 windows


def test_one_prediction_reads_as_listed(client, auth):
    listed = client.get(f"/v1/predictions?pattern_id={SEED_PATTERN}&window_days=30", headers=auth()).get_json()["data"]
    assert client.get(f"/v1/predictions/{listed[0]['id']}", headers=auth()).get_json() == listed[0]
    assert set(listed[0]) == {"id", "pattern_id", "window_days", "probability", "expected_count", "interval",
                              "impact", "status", "feedback", "created_at", "updated_at"}


def test_the_summary_counts_the_window(client, auth):
    body = client.get("/v1/predictions/summary?window=7d", headers=auth()).get_json()
    listed = client.get("/v1/predictions?window_days=7", headers=auth()).get_json()["data"]
    assert body["total"] == len(listed) == 6
    assert body["above_threshold"] == sum(item["probability"] >= 0.7 for item in listed)
    assert body["high_probability"] == sum(item["probability"] >= 0.8 for item in listed)
    assert body["average_probability"] == pytest.approx(sum(i["probability"] for i in listed) / 6, abs=1e-4)


def test_the_forecast_has_the_documented_shape(client, auth):
    body = client.get(f"/v1/predictions/forecast?window=7d&pattern_id={SEED_PATTERN}", headers=auth()).get_json()
    assert list(body) == ["window", "points", "today_index", "axis", "alert_threshold", "generated_at", "breach"]
    assert body["window"] == "7d" and body["alert_threshold"] == 0.7
    assert all(set(point) == {"bucket_ts", "value", "lower", "upper", "kind"} for point in body["points"])
    kinds = [point["kind"] for point in body["points"]]
    assert kinds == ["observed"] * 168 + ["projected"] * 168 and body["today_index"] == 167
    hours = [datetime.datetime.fromisoformat(p["bucket_ts"].rstrip("Z")) for p in body["points"]]
    assert all(b - a == datetime.timedelta(hours=1) for a, b in zip(hours, hours[1:]))
    assert sum(point["value"] for point in body["points"][:168]) == 4  # 11, 12, 12 and 15 January
    assert body["breach"]["probability"] == seven_day(client.application, SEED_PATTERN).probability
    assert body["breach"]["above_threshold"] == (body["breach"]["probability"] >= 0.7)


def test_the_workspace_forecast_is_daily_beyond_a_week(client, auth):
    body = client.get("/v1/predictions/forecast?window=30d", headers=auth()).get_json()
    assert len(body["points"]) == 60 and body["axis"]["bucket"] == "day"
    assert all(p["lower"] <= p["value"] <= p["upper"] for p in body["points"])


def test_a_patterns_frequency_is_observed_then_projected(client, auth):
    body = client.get(f"/v1/patterns/{SEED_PATTERN}/frequency?window=90d", headers=auth()).get_json()
    assert body["bucket"] == "day" and len(body["observed"]) == len(body["projected"]) == 90
    assert sum(b["count"] for b in body["observed"]) == 14  # every issue of the pattern is within 90 days


def test_the_backtest_reports_the_model_next_to_both_baselines(client, auth):
    body = client.get("/v1/predictions/accuracy?window=7d", headers=auth()).get_json()
    assert body["samples"] > 0 and len(body["model"]["calibration"]) == 10
    assert set(body["baselines"]) == {"base_rate", "last_window"}
    assert set(body["model"]) >= {"brier", "log_loss", "recall_at_threshold", "calibration_error"}


def test_feedback_dismisses_a_prediction_with_its_reason(client, auth):
    prediction = client.get("/v1/predictions?limit=1", headers=auth()).get_json()["data"][0]
    response = client.post(f"/v1/predictions/{prediction['id']}/feedback", headers=auth(),
                           json={"status": "dismissed", "reason": "Fixed upstream"})
    assert response.status_code == 200
    assert response.get_json()["status"] == "dismissed"
    assert response.get_json()["feedback"]["reason"] == "Fixed upstream"
    listed = client.get("/v1/predictions?status=dismissed", headers=auth()).get_json()["data"]
    assert [item["id"] for item in listed] == [prediction["id"]]


def test_feedback_is_for_analysts_and_up(client, auth):
    prediction = client.get("/v1/predictions?limit=1", headers=auth("viewer")).get_json()["data"][0]
    response = client.post(f"/v1/predictions/{prediction['id']}/feedback", headers=auth("viewer"),
                           json={"status": "confirmed", "reason": "Yes"})
    assert assert_envelope(response, 403, "forbidden")["details"] == {"required_scope": "predictions:write"}


@pytest.mark.parametrize("path", ["/v1/predictions/summary?window=14d", "/v1/predictions/forecast?window=1w",
                                  "/v1/predictions/accuracy?window=", f"/v1/patterns/{SEED_PATTERN}/frequency?window=7"])
def test_an_unknown_window_is_a_validation_error(client, auth, path):
    assert "window" in assert_envelope(client.get(path, headers=auth()), 400, "validation_error")["details"]


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "high"])
def test_a_minimum_probability_outside_0_to_1_is_a_validation_error(client, auth, value):
    response = client.get(f"/v1/predictions?min_probability={value}", headers=auth())
    assert "min_probability" in assert_envelope(response, 400, "validation_error")["details"]


def test_another_workspaces_pattern_has_no_forecast(client, auth):
    response = client.get(f"/v1/predictions/forecast?pattern_id={THEIR_PATTERN}", headers=auth())
    assert assert_envelope(response, 404, "not_found")["details"] == {"id": THEIR_PATTERN}


def test_feedback_needs_a_known_status_and_a_reason(client, auth):
    prediction = client.get("/v1/predictions?limit=1", headers=auth()).get_json()["data"][0]
    response = client.post(f"/v1/predictions/{prediction['id']}/feedback", headers=auth(), json={"status": "maybe"})
    assert set(assert_envelope(response, 400, "validation_error")["details"]) == {"status", "reason"}


def test_a_recompute_inside_a_transaction_that_rolls_back_leaves_no_trace(app):
    with app.app_context(), db.connection_context():
        before = list(Prediction.select().order_by(Prediction.id).tuples())
        with pytest.raises(RuntimeError):
            with events.transaction():
                predictions.recompute(SEED_WORKSPACE, now=datetime.datetime(2024, 3, 1))
                raise RuntimeError("rolled back")
        assert list(Prediction.select().order_by(Prediction.id).tuples()) == before


def test_every_listed_prediction_equals_the_schema_dump(app, client, auth):
    from blueprints.predictions import PredictionSchema

    prediction = client.get("/v1/predictions?limit=1", headers=auth()).get_json()["data"][0]
    client.post(f"/v1/predictions/{prediction['id']}/feedback", headers=auth(),
                json={"status": "confirmed", "reason": 'Quotes " and é'})
    listed = client.get("/v1/predictions?limit=100", headers=auth()).get_json()["data"]
    with app.app_context(), db.connection_context():
        dumped = {row.id: PredictionSchema().dump(row) for row in Prediction.select()}
    for item in listed:
        assert item == dumped[item["id"]] and list(item) == list(dumped[item["id"]])


def test_the_worker_recomputes_every_workspaces_predictions_on_its_schedule(app):
    from app import tasks

    quarter_hour = datetime.datetime(2026, 1, 1, 12, 15)
    assert [task.name for task in tasks.huey.read_periodic(quarter_hour)] == ["recompute_predictions"]
    assert [task.name for task in tasks.huey.read_periodic(datetime.datetime(2026, 1, 1, 3, 17))] == ["prune_expired"]
    assert not tasks.huey.read_periodic(quarter_hour + datetime.timedelta(minutes=1))
    with app.app_context(), db.connection_context():
        Prediction.update(probability=0.0).where(Prediction.workspace == OTHER_WORKSPACE).execute()
    with app.app_context():
        tasks.recompute_predictions.call_local()
    with app.app_context(), db.connection_context():
        assert Prediction.select().where((Prediction.workspace == OTHER_WORKSPACE) & (Prediction.probability > 0)).exists()
    assert tasks.make_consumer(app, periodic=True).periodic and not tasks.make_consumer(app).periodic


def test_background_work_runs_at_a_lower_priority_and_reports_its_failure(app):
    import os
    import threading

    from app import tasks

    def priority():
        me = threading.get_native_id()
        return os.sched_getscheduler(me), os.getpriority(os.PRIO_PROCESS, me)

    mine = priority()
    with app.app_context():
        policy, niceness = tasks.in_background(priority)
        if hasattr(os, "SCHED_IDLE"):  # Linux
            assert (policy, niceness) == (os.SCHED_IDLE, mine[1])
        else:
            assert (policy, niceness) == (mine[0], max(mine[1], tasks.BACKGROUND_NICENESS))
        assert priority() == mine  # the caller's is untouched
        with pytest.raises(ZeroDivisionError):
            tasks.in_background(lambda: 1 / 0)
