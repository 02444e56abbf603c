"""Inbound webhooks, understood: one module per tool, each with two pure functions.

    parse(headers, payload) -> Parsed    the delivery as ingest records, resolutions, or why not
    verify(headers, raw_body, secrets) -> bool    signed (or authenticated) as the tool does it

`secrets` is a list: while a connector's secret is rotated, old and new are both valid.
`parse` takes a payload already verified and decoded as a JSON object; one that is not in the
tool's shape raises (KeyError, TypeError) and is the caller's 400. Nothing here touches the
database or the network; routes and connectors call these.
"""
from . import alertmanager, custom_api, datadog, github, jira, pagerduty, sentry
from .base import Parsed

__all__ = ["PARSERS", "Parsed"]

# Grafana's alerting webhook sends Alertmanager's shape: it is the `alertmanager` type.
PARSERS = {
    "sentry": sentry,
    "pagerduty": pagerduty,
    "github": github,
    "alertmanager": alertmanager,
    "datadog": datadog,
    "jira": jira,
    "custom_api": custom_api,
}
