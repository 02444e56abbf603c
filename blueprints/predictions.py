"""Predictions: each pattern's chance of recurring, the forecast, its backtest, and each
pattern's observed and projected frequency (the model: models/rates.py)."""
import marshmallow as ma

from app.api import Blueprint, CommaList, Timestamp
from app.auth import current_principal
from app.extensions import protector
from app.pagination import PageArgsSchema, list_schema, paginate, sort_field
from app.rendering import rendered_object
from models import Pattern, Prediction
from models import predictions
from models.predictions import FEEDBACK_STATUSES, PREDICTION_STATUSES
from models.rates import WINDOWS

blp = Blueprint("predictions", __name__, url_prefix="/v1", protector=protector,
                description="How likely each pattern is to recur in the next 7, 30 or 90 days, and how "
                            "well that has predicted this workspace's own past.")

Length = ma.validate.Length
PATTERN_ID = ma.validate.Regexp(r"^pat_[0-9A-Za-z]{1,36}$", error="Not a pattern id.")


class IntervalSchema(ma.Schema):
    lower = ma.fields.Float(required=True)
    upper = ma.fields.Float(required=True)


class FeedbackSchema(ma.Schema):
    reason = ma.fields.String(required=True)
    at = Timestamp(required=True)


class PredictionSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "prd_01j9z3k8m2q4r6t8v0w2x4y6z8"})
    pattern_id = ma.fields.String(required=True, metadata={"example": "pat_01xyz789"})
    window_days = ma.fields.Integer(required=True, metadata={"enum": list(WINDOWS.values())})
    probability = ma.fields.Float(required=True, metadata={
        "minimum": 0, "maximum": 1, "description": "P(at least one recurrence within the window)."})
    expected_count = ma.fields.Float(required=True, metadata={"description": "Expected issues in the window."})
    interval = ma.fields.Nested(IntervalSchema, required=True, metadata={
        "description": "90% interval of the number of issues in the window."})
    impact = ma.fields.Float(required=True, metadata={
        "description": "Expected issues × the pattern's mean severity weight (critical 1, high 0.7, medium 0.4, "
                       "low 0.15)."})
    status = ma.fields.String(required=True, metadata={"enum": list(PREDICTION_STATUSES)})
    feedback = ma.fields.Nested(FeedbackSchema, required=True, allow_none=True)
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True, metadata={"description": "When its figures last changed."})


class PredictionQuerySchema(PageArgsSchema):
    min_probability = ma.fields.Float(validate=ma.validate.Range(0, 1), metadata={"description": "0 to 1."})
    window_days = CommaList([str(days) for days in WINDOWS.values()], metadata={
        "description": "Comma-separated windows in days."})
    pattern_id = CommaList(metadata={"description": "Comma-separated pattern ids."})
    status = CommaList(PREDICTION_STATUSES)
    sort = sort_field(Prediction.SORTS, "-probability")


class WindowQuerySchema(ma.Schema):
    window = ma.fields.String(load_default="7d", validate=ma.validate.OneOf(list(WINDOWS)), metadata={
        "description": "7d, 30d or 90d (default 7d)."})


class ForecastQuerySchema(WindowQuerySchema):
    pattern_id = ma.fields.String(validate=PATTERN_ID, metadata={
        "description": "One pattern; without it, the workspace's patterns summed."})


class FeedbackCreateSchema(ma.Schema):
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(FEEDBACK_STATUSES))
    reason = ma.fields.String(required=True, validate=Length(1, 1000))


class SummarySchema(ma.Schema):
    window = ma.fields.String(required=True)
    total = ma.fields.Integer(required=True)
    high_probability = ma.fields.Integer(required=True, metadata={"description": "Probability ≥ 0.80."})
    above_threshold = ma.fields.Integer(required=True, metadata={"description": "Probability ≥ the alert threshold."})
    average_probability = ma.fields.Float(required=True)
    alert_threshold = ma.fields.Float(required=True)
    high_probability_threshold = ma.fields.Float(required=True)
    generated_at = Timestamp(required=True, allow_none=True)


class PointSchema(ma.Schema):
    bucket_ts = Timestamp(required=True, metadata={"description": "The bucket's start."})
    value = ma.fields.Float(required=True)
    lower = ma.fields.Float(required=True)
    upper = ma.fields.Float(required=True)
    kind = ma.fields.String(required=True, metadata={"enum": ["observed", "projected"]})


class AxisSchema(ma.Schema):
    bucket = ma.fields.String(required=True, metadata={"enum": ["hour", "day"]})
    unit = ma.fields.String(required=True)
    y_max = ma.fields.Float(required=True)


class BreachSchema(ma.Schema):
    probability = ma.fields.Float(required=True, metadata={"description": "P(≥ 1 recurrence within the window)."})
    above_threshold = ma.fields.Boolean(required=True)
    first_bucket_ts = Timestamp(required=True, allow_none=True, metadata={
        "description": "The first projected bucket by whose end the chance of a recurrence reaches the threshold."})


class ForecastSchema(ma.Schema):
    window = ma.fields.String(required=True)
    points = ma.fields.List(ma.fields.Nested(PointSchema), required=True, metadata={
        "description": "The observed buckets (the last is the present's, partly observed), then as many projected."})
    today_index = ma.fields.Integer(required=True, metadata={"description": "Index of the present's bucket."})
    axis = ma.fields.Nested(AxisSchema, required=True)
    alert_threshold = ma.fields.Float(required=True)
    generated_at = Timestamp(required=True)
    breach = ma.fields.Nested(BreachSchema, required=True)


class ObservedSchema(ma.Schema):
    bucket_ts = Timestamp(required=True)
    count = ma.fields.Integer(required=True)


class ProjectedSchema(ma.Schema):
    bucket_ts = Timestamp(required=True)
    value = ma.fields.Float(required=True)
    lower = ma.fields.Float(required=True)
    upper = ma.fields.Float(required=True)


class FrequencySchema(ma.Schema):
    pattern_id = ma.fields.String(required=True)
    window = ma.fields.String(required=True)
    bucket = ma.fields.String(required=True, metadata={"enum": ["hour", "day"]})
    observed = ma.fields.List(ma.fields.Nested(ObservedSchema), required=True)
    projected = ma.fields.List(ma.fields.Nested(ProjectedSchema), required=True)
    probability = ma.fields.Float(required=True)
    generated_at = Timestamp(required=True)


class ScoresSchema(ma.Schema):
    brier = ma.fields.Float(required=True, allow_none=True)
    log_loss = ma.fields.Float(required=True, allow_none=True)
    recall_at_threshold = ma.fields.Float(required=True, allow_none=True, metadata={
        "description": "Share of the recurrences predicted at or above the alert threshold."})


class DecileSchema(ma.Schema):
    lower = ma.fields.Float(required=True)
    upper = ma.fields.Float(required=True)
    count = ma.fields.Integer(required=True)
    mean_predicted = ma.fields.Float(required=True, allow_none=True)
    observed = ma.fields.Float(required=True, allow_none=True)


class ModelScoresSchema(ScoresSchema):
    calibration_error = ma.fields.Float(required=True, allow_none=True, metadata={
        "description": "Mean |mean prediction − observed frequency| across the non-empty deciles."})
    weighted_calibration_error = ma.fields.Float(required=True, allow_none=True, metadata={
        "description": "The same, weighted by each decile's count."})
    calibration = ma.fields.List(ma.fields.Nested(DecileSchema), required=True)


class BaselinesSchema(ma.Schema):
    base_rate = ma.fields.Nested(ScoresSchema, required=True)
    last_window = ma.fields.Nested(ScoresSchema, required=True)


class ImprovementSchema(ma.Schema):
    base_rate = ma.fields.Float(required=True, allow_none=True)
    last_window = ma.fields.Float(required=True, allow_none=True)


class AccuracySchema(ma.Schema):
    window = ma.fields.String(required=True)
    alert_threshold = ma.fields.Float(required=True)
    origins = ma.fields.Integer(required=True)
    samples = ma.fields.Integer(required=True, metadata={"description": "(origin, pattern) pairs scored."})
    recurrence_rate = ma.fields.Float(required=True, allow_none=True)
    model = ma.fields.Nested(ModelScoresSchema, required=True)
    baselines = ma.fields.Nested(BaselinesSchema, required=True)
    brier_improvement = ma.fields.Nested(ImprovementSchema, required=True, metadata={
        "description": "1 − the model's Brier score / the baseline's."})
    generated_at = Timestamp(required=True)


PredictionListSchema = list_schema(PredictionSchema, "PredictionList")


@blp.route("/predictions")
@blp.auth_required("predictions:read")
@blp.arguments(PredictionQuerySchema, location="query")
@blp.response(200, PredictionListSchema)
def list_predictions(args):
    """List predictions, likeliest first."""
    args = {**args, "window_days": [int(days) for days in args.get("window_days") or ()]}
    query = Prediction.search(current_principal().workspace_id, args)
    return paginate(query, args, sorts=Prediction.SORTS, id_field=Prediction.id, item_schema=PredictionSchema)


@blp.route("/predictions/summary")
@blp.auth_required("predictions:read")
@blp.arguments(WindowQuerySchema, location="query")
@blp.response(200, SummarySchema)
def summary(args):
    """How many patterns are likely to recur in the window, and how likely on average."""
    return predictions.summary(current_principal().workspace_id, WINDOWS[args["window"]])


@blp.route("/predictions/forecast")
@blp.auth_required("predictions:read")
@blp.arguments(ForecastQuerySchema, location="query")
@blp.response(200, ForecastSchema)
@blp.errors(404)
def forecast(args):
    """Observed and projected issues per bucket, for one pattern or the whole workspace."""
    workspace_id = current_principal().workspace_id
    if args.get("pattern_id"):
        Pattern.get_in_workspace(args["pattern_id"], workspace_id)
    return predictions.forecast(workspace_id, WINDOWS[args["window"]], args.get("pattern_id"))


@blp.route("/predictions/accuracy")
@blp.auth_required("predictions:read")
@blp.arguments(WindowQuerySchema, location="query")
@blp.response(200, AccuracySchema)
def accuracy(args):
    """Backtest on this workspace's history: each past window predicted from what was known before it."""
    return predictions.accuracy(current_principal().workspace_id, WINDOWS[args["window"]])


@blp.route('/predictions/<id("prd"):prediction_id>')
@blp.auth_required("predictions:read")
@blp.response(200, PredictionSchema)
@blp.errors(404)
def get_prediction(prediction_id):
    """Fetch one prediction."""
    return rendered_object(PredictionSchema, Prediction, prediction_id, current_principal().workspace_id)


@blp.route('/predictions/<id("prd"):prediction_id>/feedback', methods=["POST"])
@blp.auth_required("predictions:write")
@blp.arguments(FeedbackCreateSchema)
@blp.response(200, PredictionSchema)
@blp.errors(404)
def feedback(body, prediction_id):
    """Confirm or dismiss a prediction, with a reason; it keeps that status as it is recomputed."""
    return Prediction.give_feedback(prediction_id, current_principal().workspace_id, body["status"], body["reason"])


@blp.route('/patterns/<id("pat"):pattern_id>/frequency')
@blp.auth_required("patterns:read")
@blp.arguments(WindowQuerySchema, location="query")
@blp.response(200, FrequencySchema)
@blp.errors(404)
def frequency(args, pattern_id):
    """A pattern's issues per bucket over the window (hourly for 7d, else daily), and the next window projected."""
    workspace_id = current_principal().workspace_id
    Pattern.get_in_workspace(pattern_id, workspace_id)
    series = predictions.forecast(workspace_id, WINDOWS[args["window"]], pattern_id)
    return {"pattern_id": pattern_id, "window": series["window"], "bucket": series["axis"]["bucket"],
            "observed": [{"bucket_ts": p["bucket_ts"], "count": int(p["value"])}
                         for p in series["points"] if p["kind"] == "observed"],
            "projected": [p for p in series["points"] if p["kind"] == "projected"],
            "probability": series["breach"]["probability"], "generated_at": series["generated_at"]}
