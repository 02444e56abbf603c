"""An index for claiming an endpoint's due deliveries in a batch: its pending rows in due order,
instead of every delivery it ever had."""


def up(migrator, db):
    db.execute_sql('CREATE INDEX "webhook_delivery_endpoint_status_next_attempt" ON "webhook_delivery" '
                   "(endpoint_id, status, next_attempt_at)")


def down(migrator, db):
    db.execute_sql('DROP INDEX "webhook_delivery_endpoint_status_next_attempt"')
