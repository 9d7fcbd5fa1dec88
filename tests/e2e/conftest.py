"""The devnet as a dApp sees it: ``creditbridge devnet`` started as a real subprocess (anvil
chains, contracts, 4 signer processes with threshold 3, the aggregator, the API), driven only
through ``devnet.json``, the public HTTP API and the chains' JSON-RPC."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIRMATIONS = 6
BLOCK_TIME = 0.5


class Devnet:
    def __init__(self, directory: Path, proc: subprocess.Popen, info: dict) -> None:
        self.dir = directory
        self.proc = proc
        self.info = info
        self.api = info["api"]

    def pid(self, name: str) -> int:
        return int((self.dir / "pids" / f"{name}.pid").read_text())

    def signal(self, name: str, sig: int) -> int:
        pid = self.pid(name)
        os.kill(pid, sig)
        return pid

    def log(self, name: str) -> str:
        return (self.dir / "logs" / f"{name}.log").read_text()

    async def wait_restarted(self, name: str, old_pid: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.pid(name) != old_pid:
                    return
            except (OSError, ValueError):
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"{name} was not restarted")

    async def call(self, method: str, path: str, body=None, expect: int | None = None) -> dict:
        async with aiohttp.ClientSession() as s:
            for attempt in range(60):  # the API itself may be restarting in some tests
                try:
                    async with s.request(method, self.api + path, json=body) as r:
                        data = await r.json(content_type=None)
                        if expect is not None:
                            assert r.status == expect, (r.status, data)
                        return data
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.5)
            raise AssertionError(f"API unreachable for {path}")

    async def rpc(self, chain: str, method: str, *params):
        async with aiohttp.ClientSession() as s:
            async with s.post(self.info["chains"][chain]["rpc"],
                              json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}) as r:
                body = await r.json()
        assert "error" not in body, body
        return body["result"]


@contextlib.contextmanager
def devnet_process(tmp_path_factory, name: str, extra: list[str], start_timeout: float = 480):
    """A ``creditbridge devnet`` child process with ``extra`` arguments: yields its ``Devnet``
    once devnet.json exists (480 s: the devnet itself gives its services 300 s to answer after
    the chains are up; at load average 28 the chains alone took 160 s, and a start cut off at
    180 s failed every e2e test that shares it); on exit SIGTERM, which must stop it cleanly within 60 s and remove
    devnet.json."""
    d = tmp_path_factory.mktemp(name) / "dn"
    log = open(d.parent / "devnet.out", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "devnet", "--dir", str(d), "--api-port", "0", *extra,
         "--confirmations", str(CONFIRMATIONS), "--block-time", str(BLOCK_TIME)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    info_file = d / "devnet.json"
    deadline = time.monotonic() + start_timeout
    while not info_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            # the whole process group: killing the devnet alone would orphan its chains and
            # components, which then load the machine for the rest of the suite
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            log.close()
            raise AssertionError("devnet did not start:\n" + (d.parent / "devnet.out").read_text()[-3000:])
        time.sleep(0.2)
    yield Devnet(d, proc, json.loads(info_file.read_text()))
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("devnet did not stop on SIGTERM within 60 s")
    finally:
        log.close()
    assert proc.returncode == 0, f"devnet exited with {proc.returncode}"
    assert not info_file.exists(), "devnet.json must be removed on a clean stop"


@pytest.fixture(scope="module")
def devnet(tmp_path_factory):
    with devnet_process(tmp_path_factory, "devnet", []) as net:
        yield net
