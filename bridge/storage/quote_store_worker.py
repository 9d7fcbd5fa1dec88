"""The quote writer's store process: signs batches of quotes and commits them to a SQLite file.

    python -I quote_store_worker.py DATABASE_PATH INSERT_SQL

Started and owned by ``bridge.storage.quotes._SqliteBatch`` (one per quote writer); never run
by hand. It imports the standard library, ``bridge.pricing.quote_batch`` (standard library
only) and, once it is given the key, ``cryptography``'s Ed25519 -- nothing else of the gateway
(no configuration), so it starts in a few tens of milliseconds.

Protocol on stdin/stdout, each message a 4-byte big-endian length then a pickle; requests:

* ``("key", secret)``: the gateway's 32-byte Ed25519 quote key (sent first by a writer that
  signs; over the pipe, never in argv or the environment); reply ``None``;
* ``("rows", rows)``: row tuples (the writer's ``_rows``: values sqlite3 binds as they are);
  reply ``None`` once committed (BEGIN IMMEDIATE, one ``executemany``, COMMIT);
* ``("sign", templates, items, rows)``: ``quote_batch.sign_batch`` over the items (one
  signature over their Merkle root), then the items' rows and ``rows`` committed in one
  transaction; reply ``("signed", signature, root, out)`` (``out``: each item's JSON or proof).

A database error rolls back and replies ``("error", sqlite3 exception class name, message)``;
anything else that fails a request (a sign request before the key) replies ``("failed",
description)``. One request at a time, answered in order. End of stdin (the API process closed
the pipe or died) ends the process. Why a process at all, and not a thread: ``docs/quotes.md``
and the README's architecture section (a thread's SQLite work shared the event loop's GIL and
cost the quote endpoint ~35 µs of every request's wall-clock CPU; signing and serializing a
batch in the API process ~7 µs a quote more; measured in bench/quote_throughput.py). The key
here is no more exposed than in the API process that owns this one: same user, same host, and
it lives only in the two processes' memory.
"""

from __future__ import annotations

import pickle
import sqlite3
import struct
import sys
import threading
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])  # -I leaves the project off sys.path
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bridge.pricing.quote_batch import sign_batch  # noqa: E402 - after the path

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
    sign = None  # the gateway key's signing function, once given
    try:
        while True:
            head = inp.read(_LEN.size)
            if len(head) < _LEN.size:
                return 0  # the owner closed the pipe
            (n,) = _LEN.unpack(head)
            data = inp.read(n)
            if len(data) < n:
                return 0
            message = pickle.loads(data)
            kind = message[0]
            if kind == "key":
                from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

                sign = Ed25519PrivateKey.from_private_bytes(message[1]).sign
                _reply(out, None)
                continue
            answer = None
            if kind == "rows":
                rows = message[1]
            else:
                try:
                    if sign is None:
                        raise RuntimeError("no key was given")
                    templates, items, rows = message[1:]
                    signature, root, answers, signed_rows = sign_batch(templates, items, sign)
                except Exception as e:  # noqa: BLE001 - answered, the process keeps serving
                    _reply(out, ("failed", f"{type(e).__name__}: {e}"))
                    continue
                rows = signed_rows + rows if rows else signed_rows
                answer = ("signed", signature, root, answers)
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
                _reply(out, ("error", type(e).__name__, str(e)))
                continue
            _reply(out, answer)
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
