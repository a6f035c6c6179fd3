import pytest
from distributed.utils_test import cleanup, client, cluster_fixture, loop, loop_in_thread  # noqa: F401


@pytest.fixture(params=["sync", "threads", "processes"])
def local_scheduler(request):
    return request.param
