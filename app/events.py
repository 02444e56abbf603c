"""The event bus: what committed writes hand over, and what live streams subscribe to."""
from models import events as outbox


def init_app(app, serializers):
    outbox.SERIALIZERS.update(serializers)
    outbox.transaction.on_commit = _published


def _published(events):
    """Committed events; the stream's bus fans them out (none yet: nothing subscribes)."""
