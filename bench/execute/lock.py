"""One driver per output folder, one trainer per job: lock files that survive crashes and shared folders.

Two ``diffbench run`` drivers on the same ``--output`` would both train every job into the same job
folder and log it twice (and on a fresh folder race to create the MLflow schema). So a driver takes

* an **output lock**, ``OUTPUT/.diffbench.lock``: created with ``O_EXCL`` (atomic on local disks and
  NFS), holding who holds it (pid, host, process start time, command, a random token). A second
  driver is refused with one line naming the holder. A lock whose holder is gone is *stale* and taken
  over: same host → the pid is dead (or was reused by another process: its start time differs);
  another host → the holder stopped refreshing the file's modification time (a heartbeat every
  :data:`HEARTBEAT_S` seconds) for :data:`STALE_AFTER_S` seconds.
* a **job claim** per job it trains, ``OUTPUT/jobs/<hash>/claim.json``, same file format and rules.
  The lock already keeps drivers apart; the claims make the rule hold per job as well, for the cases the
  output lock cannot see (a lock judged stale while its holder lives on a partitioned node, a job folder
  shared by several output folders through links), so two drivers can never train one job twice.
  The worker checks the claim before it trains (:func:`check_claim`).

Nothing here imports torch, Ray or MLflow.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.jobs.files import describe_os_error
from methods.errors import UserError

LOCK_NAME = ".diffbench.lock"
CLAIM_NAME = "claim.json"
#: How often a live holder touches its lock and claim files.
HEARTBEAT_S = 30.0
#: A lock of another host that nobody touched for this long belongs to a dead driver.
STALE_AFTER_S = 300.0


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command (field 2) is in parentheses and may contain spaces.
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class Holder:
    """Who holds a lock or claim."""

    pid: int
    host: str
    started: str | None
    since: float
    command: str
    token: str

    @classmethod
    def me(cls, token: str) -> Holder:
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=_proc_start(os.getpid()),
            since=time.time(),
            command=shlex.join(["diffbench", *sys.argv[1:]])[:500],
            token=token,
        )

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} on {self.host}, since {when}: {self.command}"

    def is_stale(self, mtime: float) -> bool:
        """Whether the process that wrote this holder is gone (see the module docstring).

        A holder in *this* process whose lock is no longer live here is gone too: a driver that could not remove
        its lock file (a folder made read-only under it) must not lock out the next driver of the same process.
        """
        if self.host == socket.gethostname():
            if self.pid == os.getpid():
                return self.token not in _LIVE_TOKENS
            if not _alive(self.pid):
                return True
            started = _proc_start(self.pid)
            return self.started is not None and started is not None and started != self.started
        return time.time() - mtime > STALE_AFTER_S


#: Tokens of the locks this process holds now.
_LIVE_TOKENS: set[str] = set()


def _read(path: Path) -> tuple[Holder | None, float]:
    """The holder recorded in ``path`` (``None`` if the file is unreadable or half written) and its mtime."""
    try:
        mtime = path.stat().st_mtime
        data = json.loads(path.read_text())
        return Holder(**data), mtime
    except FileNotFoundError:
        raise
    except (OSError, ValueError, TypeError):
        return None, 0.0


def _create(path: Path, holder: Holder) -> bool:
    """Create ``path`` exclusively with ``holder`` in it; False if it already exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(holder), f)
        f.flush()
        os.fsync(f.fileno())
    return True


def _acquire(path: Path, holder: Holder, what: str) -> Holder | None:
    """Take ``path`` for ``holder``; return the live other holder instead when there is one.

    A stale file is renamed aside before it is replaced, so of two drivers taking over the same stale
    lock at once only one wins the rename and the other sees the winner's fresh file.
    """
    for _attempt in range(3):
        if _create(path, holder):
            return None
        try:
            other, mtime = _read(path)
        except FileNotFoundError:
            continue
        if other is not None and other.token == holder.token:
            return None
        if other is None:
            # Half written by a driver that is creating it right now, or garbage left by a crash.
            if time.time() - mtime < 5.0:
                time.sleep(0.5)
                continue
        elif not other.is_stale(mtime):
            return other
        aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, aside)
            aside.unlink()
    raise UserError(f"cannot take the {what} {path}: it keeps changing; is another diffbench starting?")


class OutputLock:
    """The exclusive lock of one output folder, with a heartbeat thread; a context manager.

    Args:
        output: the output folder (created if missing).
    """

    def __init__(self, output: Path) -> None:
        self.output = Path(output)
        self.path = self.output / LOCK_NAME
        self.token = uuid.uuid4().hex
        self.holder = Holder.me(self.token)
        self._claims: set[Path] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    def acquire(self) -> OutputLock:
        other = _acquire(self.path, self.holder, "output lock")
        if other is not None:
            raise UserError(
                f"output folder {self.output} is in use by another diffbench driver ({other.describe()}); "
                f"wait for it to finish, stop it, or pass another --output (lock file: {self.path})"
            )
        _LIVE_TOKENS.add(self.token)
        self._thread = threading.Thread(target=self._beat, name="diffbench-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._mutex:
                paths = [self.path, *self._claims]
            for p in paths:
                with contextlib.suppress(OSError):
                    os.utime(p)

    # -- job claims --------------------------------------------------------------------------
    def claim(self, job_dir: Path) -> Holder | None:
        """Claim the job in ``job_dir`` for this driver; return the live other holder if it has one."""
        job_dir.mkdir(parents=True, exist_ok=True)
        path = job_dir / CLAIM_NAME
        other = _acquire(path, self.holder, "job claim")
        if other is None:
            with self._mutex:
                self._claims.add(path)
        return other

    def unclaim(self, job_dir: Path) -> None:
        path = job_dir / CLAIM_NAME
        with self._mutex:
            self._claims.discard(path)
        _remove_if_mine(path, self.token)

    def release(self) -> None:
        """Drop every claim and the lock (only files that are still ours); idempotent.

        Never raises: it runs while another error (a full or read-only disk, an interrupt) is on its way out, and
        must not replace it. A file that cannot be removed is left to the staleness rule (its holder is gone).
        """
        self._stop.set()
        _LIVE_TOKENS.discard(self.token)
        with self._mutex:
            claims, self._claims = list(self._claims), set()
        for path in [*claims, self.path]:
            _remove_if_mine(path, self.token)

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _remove_if_mine(path: Path, token: str) -> None:
    """Remove ``path`` if ``token`` holds it; a file that cannot be read or removed (gone, read-only) stays."""
    try:
        holder, _ = _read(path)
    except OSError:
        return
    if holder is not None and holder.token == token:
        with contextlib.suppress(OSError):
            path.unlink()


def live_holder(output: Path) -> Holder | None:
    """The live driver holding ``output``'s lock, or ``None`` (no lock, or its holder is gone)."""
    try:
        holder, mtime = _read(Path(output) / LOCK_NAME)
    except OSError:
        return None
    return None if holder is None or holder.is_stale(mtime) else holder


def check_claim(job_dir: Path, token: str | None) -> None:
    """In the worker, before training: refuse when a live driver other than ours holds the job's claim.

    ``token`` is the claiming driver's token (``None``: not run by a grid, e.g. ``diffbench train``,
    which only checks that no live grid holds the job).
    """
    path = Path(job_dir) / CLAIM_NAME
    try:
        holder, mtime = _read(path)
    except FileNotFoundError:
        return
    if holder is None or holder.token == token or holder.is_stale(mtime):
        return
    raise UserError(f"job {Path(job_dir).name} is being trained by another diffbench driver ({holder.describe()})")


def prepare_output(output: Path) -> Path:
    """Create ``output`` if needed and prove it is writable, before anything starts; one-line errors.

    Returns the resolved folder. Catches an output path that is a file, a read-only or immutable folder
    and a full disk (a probe file is written, synced and removed).
    """
    output = Path(output).expanduser()
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file, not a folder")
    try:
        output.mkdir(parents=True, exist_ok=True)
        _probe(output / f".write-test-{os.getpid()}")
    except OSError as err:
        raise UserError(f"output folder {output} is not writable: {describe_os_error(err)}") from None
    return output.resolve()


def _probe(path: Path) -> None:
    """Write, sync and remove a small file (what a checkpoint write needs to work)."""
    with path.open("wb") as f:
        f.write(b"0" * 4096)
        f.flush()
        os.fsync(f.fileno())
    path.unlink()
