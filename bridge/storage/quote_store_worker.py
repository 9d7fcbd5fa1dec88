"""The quote writer's store process: commits batches of quote rows to a SQLite file.

    python -I quote_store_worker.py DATABASE_PATH INSERT_SQL

Started and owned by ``bridge.storage.quotes._SqliteStore`` (one per quote writer); never run
by hand. Standard library only, so it starts in a few tens of milliseconds and imports
nothing of the gateway (no keys, no configuration: it sees quote rows, which are public).

Protocol on stdin/stdout, each message a 4-byte big-endian length then a pickle:

* request: a list of row tuples (the writer's ``_rows``: values sqlite3 binds as they are);
* reply: ``None`` once the rows are committed (BEGIN IMMEDIATE, one ``executemany``, COMMIT),
  or ``(sqlite3 exception class name, message)`` after a rollback.

One request at a time, answered in order. End of stdin (the API process closed the pipe or
died) ends the process. Why a process at all, and not a thread: ``docs/quotes.md`` and the
README's architecture section (a thread's SQLite work shared the event loop's GIL and cost the
quote endpoint ~35 µs of every request's wall-clock CPU; measured in bench/quote_throughput.py).
"""

from __future__ import annotations

import pickle
import sqlite3
import struct
import sys
import threading

_LEN = struct.Struct(">I")
PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000")


def _reply(out, value) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_LEN.pack(len(data)) + data)
    out.flush()


def _commit(conn: sqlite3.Connection, sql: str, rows: list) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


CHECKPOINT_EVERY = 0.5  # seconds between the checkpointer's passive checkpoints


def _checkpointer(path: str, stop: threading.Event) -> None:
    """Copy the WAL into the database beside the writer (``wal_checkpoint(PASSIVE)`` never
    blocks a writer): the writer's own commits then never run a checkpoint, whose fsyncs
    stalled a commit -- and every quote waiting for it -- for milliseconds."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        while not stop.wait(CHECKPOINT_EVERY):
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as e:  # busy or locked by another process: next round
                print(f"quote store: checkpoint skipped ({type(e).__name__})", file=sys.stderr)
    finally:
        conn.close()


def _open(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        for pragma in PRAGMAS:
            conn.execute(f"PRAGMA {pragma}")
    except BaseException:
        conn.close()
        raise
    return conn


def serve(path: str, sql: str, inp, out) -> int:
    """Answer requests until the end of ``inp``."""
    stop = threading.Event()
    conn: sqlite3.Connection | None = None
    checkpointer: threading.Thread | None = None
    checkpoint_here = False  # the checkpointer died: the commits checkpoint (once switched back)
    try:
        while True:
            head = inp.read(_LEN.size)
            if len(head) < _LEN.size:
                return 0  # the owner closed the pipe
            (n,) = _LEN.unpack(head)
            data = inp.read(n)
            if len(data) < n:
                return 0
            rows = pickle.loads(data)
            try:
                if conn is None:
                    conn = _open(path)
                if checkpointer is None:  # commits leave checkpoints to the checkpointer thread
                    conn.execute("PRAGMA wal_autocheckpoint=0")
                    checkpointer = threading.Thread(target=_checkpointer, args=(path, stop), name="checkpointer",
                                                    daemon=True)
                    checkpointer.start()
                elif not checkpoint_here and not checkpointer.is_alive():  # it failed: commits checkpoint again
                    conn.execute("PRAGMA wal_autocheckpoint=1000")
                    checkpoint_here = True
                _commit(conn, sql, rows)
            except sqlite3.Error as e:
                _reply(out, (type(e).__name__, str(e)))
                continue
            _reply(out, None)
    finally:
        stop.set()
        if conn is not None:
            conn.close()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: quote_store_worker.py DATABASE_PATH INSERT_SQL", file=sys.stderr)
        return 2
    try:
        return serve(argv[1], argv[2], sys.stdin.buffer, sys.stdout.buffer)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
