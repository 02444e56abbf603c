"""SQLite's writers take turns through a lock file (models/base.py: WriterTurns): across threads
and processes, a waiting write starts when the one before it ends, a wait that runs past the
busy timeout is a 503 with the envelope, and no failure leaves the turn taken."""
import subprocess
import sys
import threading

import peewee as pw
import pytest

from conftest import ON_POSTGRES
from test_errors import assert_envelope
from models import Issue, db, events

pytestmark = pytest.mark.skipif(ON_POSTGRES, reason="SQLite's write lock")

HOLDER = """
import sys
from app import create_app
from models import db, events
app = create_app({"DATABASE_URL": sys.argv[1], "JWT_SECRET": "x" * 40, "USE_MOCK": False})
with app.app_context(), db.connection_context():
    with events.transaction():
        print("holding", flush=True)
        sys.stdin.readline()
print("released", flush=True)
"""


def test_a_writer_waits_for_the_one_before_it_then_sees_its_write(app):
    holding, release, seen = threading.Event(), threading.Event(), {}

    def first():
        with app.app_context(), db.connection_context():
            with events.transaction():
                Issue.update(title="written first").where(Issue.id == "iss_01abc123").execute()
                holding.set()
                release.wait(10)

    def second():
        with app.app_context(), db.connection_context():
            with events.transaction():
                seen["title"] = Issue.get_by_id("iss_01abc123").title

    one = threading.Thread(target=first)
    one.start()
    assert holding.wait(10)
    two = threading.Thread(target=second)
    two.start()
    two.join(0.5)
    assert two.is_alive() and "title" not in seen  # waiting its turn, not reading around it
    release.set()
    one.join(10)
    two.join(10)
    assert seen == {"title": "written first"}


def test_a_failed_transaction_gives_up_its_turn(app):
    with app.app_context(), db.connection_context():
        with pytest.raises(ZeroDivisionError):
            with events.transaction():
                Issue.update(title="rolled back").where(Issue.id == "iss_01abc123").execute()
                1 / 0
        done = threading.Event()

        def other():
            with app.app_context(), db.connection_context():
                with events.transaction():
                    Issue.update(title="after the failure").where(Issue.id == "iss_01abc123").execute()
            done.set()

        threading.Thread(target=other).start()
        assert done.wait(5)
        assert Issue.get_by_id("iss_01abc123").title == "after the failure"


def test_a_write_waiting_past_the_timeout_on_another_process_is_a_503(app, client, auth, database_url, monkeypatch):
    headers = auth()  # minting a session writes: before the other process takes the lock
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, database_url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        monkeypatch.setattr(db.obj.writers, "timeout_s", 0.3)
        before = client.get("/v1/issues/iss_01abc123", headers=headers).get_json()
        response = client.patch("/v1/issues/iss_01abc123", headers=headers, json={"title": "never written"})
        assert_envelope(response, 503, "service_unavailable")
        assert client.get("/v1/issues/iss_01abc123", headers=headers).get_json() == before  # a read does not wait
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        after = client.patch("/v1/issues/iss_01abc123", headers=headers, json={"title": "written now"})
        assert after.status_code == 200 and after.get_json()["title"] == "written now"
    finally:
        holder.kill()
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()


def test_a_forked_process_takes_its_own_turns(app, database_url):
    """A child forked while the parent holds the turn waits for it (an inherited file
    descriptor would have shared the parent's lock)."""
    import os

    with app.app_context(), db.connection_context():
        db.obj.writers.acquire()
        try:
            child = os.fork()
            if child == 0:  # pragma: no cover - the child's outcome is its exit status
                code = 1
                try:
                    db.obj.writers.timeout_s = 0.2
                    db.obj.writers.acquire()
                except pw.OperationalError:
                    code = 0
                finally:
                    os._exit(code)
            _, status = os.waitpid(child, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        finally:
            db.obj.writers.release()
