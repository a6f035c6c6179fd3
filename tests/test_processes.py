"""dask-coded on separate processes: `dask scheduler --preload dask_coded.plugin` and `dask worker`s."""

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import dask.array as da
import numpy as np
import pytest
from distributed import Client, wait

import dask_coded
from dask_coded.faults import FaultModel
from dask_coded.keys import DECODE, PRODUCT
from dask_coded.testing import relative_error

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Sending large graph:UserWarning")]

DASK = str(pathlib.Path(sys.executable).with_name("dask"))


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextlib.contextmanager
def processes_cluster(tmp_path, model, workers=5, slow=(), faulty=()):
    """A scheduler and ``workers`` worker processes on 127.0.0.1; always torn down."""
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    DASK,
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--dashboard-address",
                    ":0",
                    "--scheduler-file",
                    str(scheduler_file),
                    "--preload",
                    "dask_coded.plugin",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        )
        _wait_for(scheduler_file.exists, 30, "the scheduler file")
        _wait_for(lambda: "address" in scheduler_file.read_text(), 10, "the scheduler address")
        address = json.loads(scheduler_file.read_text())["address"]
        for i in range(workers):
            flags = (["--slow"] if i in slow else []) + (["--faulty"] if i in faulty else [])
            procs.append(
                subprocess.Popen(
                    [
                        DASK,
                        "worker",
                        address,
                        "--name",
                        f"w{i}",
                        "--nthreads",
                        "1",
                        "--host",
                        "127.0.0.1",
                        "--no-nanny",
                        "--no-dashboard",
                        "--preload",
                        "dask_coded.faults",
                        "--model",
                        model.to_json(),
                        *flags,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=env,
                )
            )
        with Client(address) as client:
            client.wait_for_workers(workers, timeout=60)
            yield client, procs
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGINT) if proc.poll() is None else None
        for proc in reversed(procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _addresses_by_name(client):
    return {name: address for address, name in client.run(lambda dask_worker: dask_worker.name).items()}


def _plain_on_every_worker(client, data, names):
    """A plain Dask array whose block i is persisted on worker names[i]."""
    by_name = _addresses_by_name(client)
    blocks = np.array_split(data, len(names))
    pieces = [
        client.persist(da.from_array(b, chunks=b.shape), workers=[by_name[n]]) for b, n in zip(blocks, names)
    ]
    return da.concatenate(pieces)


SLOW_SECONDS = 0.05 * 60


def test_coded_finishes_while_the_slow_worker_is_busy(tmp_path):
    model = FaultModel(delay_shift=0.05, slow_factor=60, tasks="products")
    data = np.random.default_rng(0).standard_normal((500, 60))

    # Defined here, not at module level, so they travel to the processes by value.
    def _product_states(keys, dask_worker):
        """{key: the states the worker moved it through} for those of ``keys`` (as str) it ran."""
        states: dict = {}
        for entry in dask_worker.state.log:
            if len(entry) == 7 and str(entry[0]) in keys:
                states.setdefault(str(entry[0]), []).append(entry[3])
        return states

    with processes_cluster(tmp_path, model, workers=5, slow=(0,)) as (client, _):
        plain = _plain_on_every_worker(client, data, [f"w{i}" for i in range(5)])
        coded = client.persist(dask_coded.encode(data, code=dask_coded.MDSCode(3, 5)))
        x = np.ones(60)

        slow = _addresses_by_name(client)["w0"]
        exercised = 0
        for scale in range(1, 6):
            y = dask_coded.dot(coded, scale * x)
            result = y.compute()
            assert relative_error(result, data @ (scale * x)) < 1e-10
            # The slow worker's product was cancelled while it ran and never delivered (read from
            # its own transition log: no wall-clock limit, which a loaded machine could miss).
            products = {str(k) for k in y.__dask_graph__() if str(k[0]).startswith(PRODUCT)}
            states = client.run(_product_states, sorted(products), workers=[slow])[slow]
            assert all("cancelled" in s and "memory" not in s for s in states.values()), states
            exercised += bool(states)
        # On a loaded machine the scheduler may hand the slow worker's product to another worker
        # (work stealing) in some calls; it must have run one in at least one of them.
        assert exercised, "the slow worker never ran a product"

        start = time.monotonic()
        plain_result = da.dot(plain, x).compute()
        plain_time = time.monotonic() - start
        assert relative_error(plain_result, data @ x) < 1e-12
        # Plain Dask waits for the slow worker: a lower bound its injected sleep guarantees.
        assert plain_time > SLOW_SECONDS * 0.9, plain_time
        stats = dask_coded.plugin_stats(client)
        assert stats["decodes_early"] >= 1 and stats["members_dropped"] >= 1

        def coded_tasks(dask_scheduler):
            return [str(k) for k in dask_scheduler.tasks if PRODUCT in str(k) or DECODE in str(k)]

        _wait_for(lambda: not client.run_on_scheduler(coded_tasks), 30, "released coded tasks")
        held = client.run(lambda dask_worker: [str(k) for k in dask_worker.data if PRODUCT in str(k)])
        assert not any(held.values()), held


def test_worker_killed_mid_compute(tmp_path):
    model = FaultModel(delay_shift=1.0, tasks="products")
    data = np.random.default_rng(1).standard_normal((500, 40))

    # Defined here, not at module level, so they travel to the processes by value.
    def _executing(keys, dask_worker):
        return {
            str(ts.key): ts.state
            for ts in dask_worker.state.tasks.values()
            if str(ts.key) in keys and ts.state == "executing"
        }

    def _reached_memory(keys, dask_scheduler):
        return [
            str(entry[0])
            for entry in dask_scheduler.transition_log
            if str(entry[0]) in keys and entry[2] == "memory"
        ]

    with processes_cluster(tmp_path, model, workers=5) as (client, procs):
        coded = client.persist(dask_coded.encode(data, code=dask_coded.MDSCode(3, 5)))
        wait(list(dict(coded.__dask_graph__()).values()))  # encoded before the products start
        y = dask_coded.dot(coded, np.ones(40))
        products = sorted(str(k) for k in y.__dask_graph__() if str(k[0]).startswith(PRODUCT))
        doomed = _addresses_by_name(client)["w0"]  # procs[1]
        future = client.compute(y)
        running: dict = {}

        def doomed_is_computing():
            running.update(client.run(_executing, products, workers=[doomed])[doomed])
            return bool(running)

        _wait_for(doomed_is_computing, 30, "w0 to start its product")
        procs[1].kill()  # a worker dies with its product half done
        result = future.result(timeout=60)
        assert relative_error(result, data.sum(axis=1)) < 1e-10
        # Every product takes 1 s, so a recomputed lost product could only finish a second after
        # the surviving ones: the decode did not wait for it, and it never reached memory.
        assert dask_coded.plugin_stats(client)["decodes_early"] >= 1
        reached = client.run_on_scheduler(_reached_memory, sorted(running))
        assert not reached, reached
