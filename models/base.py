"""The database proxy, the base model and the small field types every model shares."""
import datetime
import fcntl
import json
import os
import threading
import time
import weakref
from urllib.parse import urlsplit

import peewee as pw
from playhouse.db_url import parse as parse_db_url
from playhouse.pool import PooledDatabase, PooledPostgresqlDatabase, PooledSqliteDatabase
from ulid import ULID

db = pw.DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": 10_000,  # ms a writer waits for the lock before a 503
    "foreign_keys": 1,
    "synchronous": "normal",
    # Per pooled connection (up to DB_POOL_SIZE a worker): the hot pages of a list; the OS
    # page cache holds the rest.
    "cache_size": -8 * 1024,
}


class WriterTurns:
    """SQLite's writers, in every process and thread on the machine, taking turns at the write
    lock: a lock file beside the database (`<path>-writers`), flocked while a transaction that
    began IMMEDIATE is open, and a lock among this process's threads in front of it.

    SQLite's own busy handler makes a writer that finds the lock taken sleep 1, 2, 5 ... up to
    100 ms between tries, however soon it is freed, and lets a newcomer take it first, so under
    a few concurrent writers a short write's wait had a tail of hundreds of milliseconds. Here a
    waiting thread is woken as soon as the process's lock is released; across processes one
    thread a process asks the kernel for the file lock at most every millisecond. Waits end, as
    SQLite's do, with "database is locked" (a 503) after the busy timeout."""

    POLL_S = (0.0001, 0.001)  # the first and the longest pause between tries for the file lock

    def __init__(self, path, timeout_s):
        self.path, self.timeout_s = path + "-writers", timeout_s
        self._local, self._threads, self._fd = threading.local(), threading.Lock(), None
        _writer_turns.add(self)

    def _forked(self):
        """In a forked child (one thread, at fork time): the parent's open file is the parent's
        lock, and a thread lock held at the fork would stay held; both made afresh."""
        self.close()
        self._local, self._threads = threading.local(), threading.Lock()

    def acquire(self):
        deadline = time.monotonic() + self.timeout_s
        if not self._threads.acquire(timeout=self.timeout_s):
            raise pw.OperationalError("database is locked (waited for this process's writers)")
        if self._fd is None:  # opened by the process's first writer, under the thread lock
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._closer = weakref.finalize(self, os.close, self._fd)
        pause = self.POLL_S[0]
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._threads.release()
                    raise pw.OperationalError("database is locked (waited for other processes' writers)") from None
                time.sleep(pause)
                pause = min(pause * 2, self.POLL_S[1])
        self._local.held = True

    def release(self):
        """Idempotent: a failed COMMIT's ROLLBACK releases too."""
        if getattr(self._local, "held", False):
            self._local.held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._threads.release()

    def close(self):
        if self._fd is not None:
            self._closer()
            self._fd = None


_writer_turns = weakref.WeakSet()
os.register_at_fork(after_in_child=lambda: [turns._forked() for turns in list(_writer_turns)])


class QueuedSqliteDatabase(PooledSqliteDatabase):
    """A transaction that begins IMMEDIATE (every events.transaction) first waits its turn
    among writers (WriterTurns); deferred transactions and single statements do not."""

    def __init__(self, database, *args, **kwargs):
        super().__init__(database, *args, **kwargs)
        self.writers = (None if database in ("", ":memory:") or database.startswith("file:")
                        else WriterTurns(database, SQLITE_PRAGMAS["busy_timeout"] / 1000))

    def begin(self, lock_type=None):
        immediate = self.writers is not None and (lock_type or self._lock_type or "").upper() in ("IMMEDIATE",
                                                                                                  "EXCLUSIVE")
        if immediate:
            self.writers.acquire()
        try:
            super().begin(lock_type)
        except BaseException:
            if immediate:
                self.writers.release()
            raise

    def commit(self):
        try:
            super().commit()
        finally:
            self._released()

    def rollback(self):
        try:
            super().rollback()
        finally:
            self._released()

    def close_all(self):
        super().close_all()
        if self.writers is not None:
            self.writers.close()

    def _released(self):
        if self.writers is not None:
            self.writers.release()


def make_database(url, pool_size=10):
    """A peewee database for a `DATABASE_URL` (sqlite:///path, postgres:// or postgresql://)."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = url[len("sqlite:///"):] or "causeloop.db"
        # Pooled: opening a connection and setting its pragmas costs more than a typical query.
        return QueuedSqliteDatabase(path, max_connections=pool_size, timeout=10, pragmas=SQLITE_PRAGMAS,
                                    check_same_thread=False)
    if scheme in ("postgres", "postgresql"):
        params = parse_db_url("postgresql" + url[len(scheme):])
        params.setdefault("connect_timeout", 5)
        return PooledPostgresqlDatabase(
            params.pop("database"),
            max_connections=pool_size,
            stale_timeout=300,
            timeout=10,
            prefer_psycopg3=True,
            **params,
        )
    raise ValueError(f"DATABASE_URL must start with sqlite:///, postgres:// or postgresql://, got {scheme!r}")


def is_postgres():
    return isinstance(db.obj, pw.PostgresqlDatabase)


def release_connections():
    """Close idle pooled connections. Called after start-up database work in the gunicorn
    master: a forked worker must never inherit (and share) an open connection."""
    if isinstance(db.obj, PooledDatabase):
        db.obj.close_idle()


_prepared = {}  # (name, database class) -> (model, sql, params: a marker names a value)


def prepared(name, build, **values):
    """The model query `build(**values)` makes, compiled to SQL once per kind of database.

    For the queries nearly every request makes: building and compiling a peewee query costs
    several times what running it does. `build` is compiled once with markers in place of the
    values, which must be strings that the fields store as given (ids, not choices).
    """
    model, sql, params = _compiled(name, build, values)
    return model.raw(sql, *params)


def prepared_rows(name, build, **values):
    """As prepared(), but the rows as the driver returns them (tuples, no field conversions)."""
    return prepared_cursor(name, build, **values).fetchall()


def prepared_cursor(name, build, **values):
    """As prepared(), for any query (a write too): the driver's cursor, once run."""
    _, sql, params = _compiled(name, build, values)
    return db.execute_sql(sql, params)


def _compiled(name, build, values):
    key = (name, type(db.obj))
    if key not in _prepared:
        query = build(**{field: f"\0{field}\0" for field in values})
        _prepared[key] = (query.model, *query.sql())
    model, sql, params = _prepared[key]
    markers = {f"\0{field}\0": value for field, value in values.items()}
    return model, sql, [markers.get(param, param) if isinstance(param, str) else param for param in params]


def utcnow():
    """Now, in UTC, naive, to whole seconds: what the API shows is what is stored."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None, microsecond=0)


def insert_rows(model, rows, ignore_conflicts=False):
    """Insert rows (dicts by field name; a missing field takes its default) with one statement
    run for each row (executemany), skipping a row that conflicts if `ignore_conflicts`.

    peewee's insert_many renders every value through its query builder, which for a batch of
    500 issues took longer than the database did; here each value only goes through its
    field's db_value. JSON on SQLite keeps peewee's json() around the text."""
    fields = [field for field in model._meta.sorted_fields if not isinstance(field, pw.AutoField)]
    columns = ", ".join(f'"{field.column_name}"' for field in fields)
    sql = (f'INSERT INTO "{model._meta.table_name}" ({columns}) VALUES ({", ".join(map(_mark, fields))})'
           + (" ON CONFLICT DO NOTHING" if ignore_conflicts else ""))

    def value(field, row):
        value = row[field.name] if field.name in row else field.default
        return _db_value(field, value() if callable(value) else value)

    _executemany(sql, [[value(field, row) for field in fields] for row in rows])


def update_rows(model, instances, names):
    """Write the named fields of each model instance to its row (by primary key), with one
    statement run for each (executemany), as insert_rows does for inserts."""
    fields = [model._meta.fields[name] for name in names]
    key = model._meta.primary_key
    assignments = ", ".join(f'"{field.column_name}" = {_mark(field)}' for field in fields)
    sql = f'UPDATE "{model._meta.table_name}" SET {assignments} WHERE "{key.column_name}" = {db.param}'
    _executemany(sql, [[_db_value(field, getattr(instance, field.name)) for field in fields]
                       + [key.db_value(instance.get_id())] for instance in instances])


def _sqlite_json(field):
    return isinstance(field, pw.JSONField) and not is_postgres()


def _mark(field):
    return f"json({db.param})" if _sqlite_json(field) else db.param


def _db_value(field, value):
    if _sqlite_json(field):
        return None if value is None else json.dumps(value)
    return field.db_value(value)


def _executemany(sql, params):
    if params:
        with pw.__exception_wrapper__:
            db.cursor().executemany(sql, params)


def for_update(query):
    """`query`, locking the rows it reads until commit where the database locks rows
    (PostgreSQL); SQLite runs one writer at a time, so its reads need no lock."""
    return query.for_update() if is_postgres() else query


def new_id(prefix):
    return f"{prefix}_{str(ULID()).lower()}"


class BaseModel(pw.Model):
    class Meta:
        database = db
        legacy_table_names = False

    @classmethod
    def next_id(cls):
        return new_id(cls.ID_PREFIX)


class WorkspaceScoped:
    """Query helpers for models that belong to a workspace: another workspace's rows do not
    exist for a caller (404, never 403)."""

    KIND = None  # "Issue", "Pattern": how a 404 names the missing object

    @classmethod
    def in_workspace(cls, workspace_id):
        return cls.select().where(cls.workspace == workspace_id)

    @classmethod
    def get_in_workspace(cls, object_id, workspace_id, lock=False):
        """The object, or NotFound; with `lock`, its row stays locked until commit."""

        def build(object_id, workspace_id):
            query = cls.in_workspace(workspace_id).where(cls.id == object_id).limit(1)
            return for_update(query) if lock else query

        found = next(iter(prepared(f"{cls.__name__}.get_in_workspace{'.locked' if lock else ''}", build,
                                   object_id=object_id, workspace_id=workspace_id)), None)
        if found is None:
            raise NotFound(cls.KIND, object_id)
        return found


class Fingerprinted:
    """A root-cause fingerprint kept as two columns, fingerprint_domain and
    fingerprint_root_cause; none when neither is set."""

    @property
    def fingerprint(self):
        if self.fingerprint_domain is None and self.fingerprint_root_cause is None:
            return None
        return {"domain": self.fingerprint_domain, "root_cause": self.fingerprint_root_cause}


class ChoiceIntField(pw.SmallIntegerField):
    """Stores one of an ordered set of names as its rank, so it sorts by meaning, not spelling."""

    def __init__(self, choices, *args, **kwargs):
        self.names = tuple(choices)
        self.rank = {name: index for index, name in enumerate(self.names)}
        super().__init__(*args, **kwargs)

    def db_value(self, value):
        if value is None or isinstance(value, int):
            return value
        return self.rank[value]

    def python_value(self, value):
        return None if value is None else self.names[value]


class NotFound(LookupError):
    """No such object in this workspace (another workspace's objects do not exist for it)."""

    def __init__(self, kind, object_id):
        super().__init__(f"{kind} {object_id} not found")
        self.kind = kind
        self.object_id = object_id


class RuleViolation(ValueError):
    """Well-formed input that the resource's rules do not allow (HTTP 422); `code` is the envelope's."""

    code = "unprocessable"

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field
        self.message = message


class Conflict(ValueError):
    """The write would duplicate something unique (HTTP 409)."""

    def __init__(self, message, **details):
        super().__init__(message)
        self.message = message
        self.details = details


class Forbidden(PermissionError):
    """The caller may not do this, whatever the object (HTTP 403)."""

    def __init__(self, message, **details):
        super().__init__(message)
        self.message = message
        self.details = details
