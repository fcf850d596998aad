"""Where runs are stored: the default SQLite store of an output folder and the checks of a given tracking URI.

Nothing here imports MLflow: ``diffbench report``, ``ui`` and ``run`` check a URI before they open the store (an
unreachable server fails in seconds, not after MLflow's minutes of retries).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from methods.errors import UserError

#: MLflow's HTTP client retries for minutes by default; an unreachable server should fail fast.
_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def fail_fast_http() -> None:
    """Make MLflow's HTTP client give up at once on a dead server (it retries for minutes by default)."""
    for k, v in _HTTP_ENV.items():
        os.environ.setdefault(k, v)


def check_server(uri: str) -> None:
    """For an ``http(s)://`` tracking URI, one request to the server; ``UserError`` if it does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10).close()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"MLflow tracking server {uri!r} is not reachable: {reason}") from None


#: Tracking URI schemes MLflow's client can write runs to.
_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


def check_tracking_uri(uri: str | None) -> None:
    """Refuse a tracking URI MLflow cannot use (unknown scheme, dead server), in one line, before anything runs."""
    if uri is None or ("://" not in uri and ":" not in uri):  # a plain path: MLflow's file store
        return
    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    if scheme not in _SCHEMES:
        raise UserError(
            f"--tracking-uri {uri!r}: unsupported scheme {scheme or '(none)'!r}; use an MLflow server "
            "(http://host:5000), sqlite:////abs/path/mlflow.db or a database URI (postgresql://...)"
        )
    fail_fast_http()
    check_server(uri)
    if scheme == "sqlite":
        check_sqlite(uri)


def check_sqlite(uri: str) -> None:
    """A ``sqlite:///PATH`` store that cannot be opened, refused in a second (MLflow retries for two minutes).

    An existing file must open as a SQLite database; a new one needs a folder that takes a new file (the nearest
    existing one, as MLflow creates the rest: probed with an empty file that is removed again). ``sqlite://``
    (in memory) is left to MLflow.
    """
    import sqlite3

    raw = uri.split("://", 1)[1] if "://" in uri else ""
    if not raw.startswith("/") or raw in ("", "/"):
        return
    path = Path(raw[1:].split("?", 1)[0])
    where = f"--tracking-uri {uri!r}"
    if path.is_dir():
        raise UserError(f"{where}: {path} is a folder, not a database file")
    if path.exists():
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)) as db:
                db.execute("select count(*) from sqlite_master").fetchone()
        except sqlite3.Error as err:
            raise UserError(f"{where}: {path} cannot be opened as a SQLite database ({err})") from None
        return
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # MLflow creates missing folders: probe where it would
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"{where}: {folder} is not a folder")
    probe = folder / f".diffbench-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as err:
        raise UserError(f"{where}: cannot create a database in {folder} ({err.strerror or err})") from None


def default_tracking_uri(output: Path) -> str:
    return f"sqlite:///{Path(output).resolve() / 'mlflow.db'}"
