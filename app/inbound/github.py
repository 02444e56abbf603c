"""GitHub webhooks: failed `workflow_run` and `check_run`, and `issues` labelled as bugs.

Signed: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>` under the webhook secret.
The event is named by `X-GitHub-Event`, each delivery by `X-GitHub-Delivery` (a redelivery
keeps it). A run that did not fail, and an issue with no label containing "bug", carry no
failure and are ignored with the reason.
"""
from .base import Parsed, compact, header, ignore, record, signed_by_any

SOURCE = "github"
FAILED = ("failure", "timed_out")
BUG_ACTIONS = ("opened", "reopened", "labeled", "edited")  # a bug that is (now) open


def verify(headers, raw_body, secrets):
    signature = header(headers, "X-Hub-Signature-256")
    return bool(signature) and signed_by_any([signature], raw_body, secrets, prefix="sha256=")


def parse(headers, payload):
    delivery_id = header(headers, "X-GitHub-Delivery")
    event = header(headers, "X-GitHub-Event")
    repository = payload.get("repository") or {}
    if event == "workflow_run":
        return _run(payload["workflow_run"], "workflow run", repository, payload, delivery_id)
    if event == "check_run":
        return _run(payload["check_run"], "check run", repository, payload, delivery_id)
    if event == "issues":
        return _issue(payload, repository, delivery_id)
    return ignore(f"GitHub {event or 'unnamed'} events carry no failure Causeloop reads", delivery_id)


def _run(run, kind, repository, payload, delivery_id):
    if payload.get("action") != "completed" or run.get("conclusion") not in FAILED:
        return ignore(f"GitHub {kind} {payload.get('action')} with conclusion {run.get('conclusion')}: "
                      "not a failure", delivery_id)
    # A workflow_run names its workflow in `workflow`; its own `name` may be empty.
    name = run.get("name") or (payload.get("workflow") or {}).get("name") or kind
    branch = run.get("head_branch") or (run.get("check_suite") or {}).get("head_branch")
    verb = "timed out" if run["conclusion"] == "timed_out" else "failed"
    title = f"{name} {verb}" + (f" on {branch}" if branch else "") + f" ({repository.get('full_name')})"
    output = run.get("output") or {}
    # A failure on the default branch breaks everyone; on a feature branch, mostly its author.
    severity = "high" if branch and branch == repository.get("default_branch") else "medium"
    return Parsed(records=[record(
        SOURCE, f"{kind.replace(' ', '_')}/{run['id']}", title,
        body="\n".join(part for part in (output.get("title"), output.get("summary"),
                                         run.get("display_title")) if part) or None,
        severity=severity,
        external_url=run.get("html_url"),
        team=repository.get("full_name"),
        created_at=run.get("run_started_at") or run.get("started_at") or run.get("created_at"),
        metadata=compact(conclusion=run["conclusion"], branch=branch, head_sha=run.get("head_sha"),
                         run_attempt=run.get("run_attempt"), trigger=run.get("event")))],
        delivery_id=delivery_id)


def _issue(payload, repository, delivery_id):
    issue, action = payload["issue"], payload.get("action")
    labels = [label["name"] for label in issue.get("labels") or []]
    if not any("bug" in name.lower() for name in labels):
        return ignore("GitHub issue not labelled as a bug", delivery_id)
    external_id = f"{repository.get('full_name')}#{issue['number']}"
    if action == "closed":
        return Parsed(resolved_external_ids=[external_id], delivery_id=delivery_id)
    if action not in BUG_ACTIONS:
        return ignore(f"GitHub issue {action}: no new failure", delivery_id)
    severity = "critical" if any("critical" in name.lower() for name in labels) else "medium"
    return Parsed(records=[record(
        SOURCE, external_id, issue.get("title"),
        body=issue.get("body"),
        severity=severity,
        external_url=issue.get("html_url"),
        team=repository.get("full_name"),
        created_at=issue.get("created_at"),
        metadata=compact(labels=labels, number=issue["number"]))],
        delivery_id=delivery_id)
