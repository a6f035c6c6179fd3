import contextlib

import pytest
from distributed import Client
from distributed.utils_test import cleanup, client, cluster, cluster_fixture, loop, loop_in_thread  # noqa: F401


@pytest.fixture(params=["sync", "threads", "processes"])
def local_scheduler(request):
    return request.param


@pytest.fixture
def client_of(loop):  # noqa: F811
    """``client_of(n)``: a Client on n single-threaded workers, each a separate process, torn down after."""
    with contextlib.ExitStack() as stack:

        def start(workers):
            scheduler, _ = stack.enter_context(cluster(nworkers=workers, worker_kwargs={"nthreads": 1}))
            return stack.enter_context(Client(scheduler["address"], loop=loop))

        yield start
