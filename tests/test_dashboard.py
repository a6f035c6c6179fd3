"""The Coded page on the scheduler's dashboard, served by a real scheduler over HTTP."""

import asyncio
import base64
import itertools
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile

import dask.array as da
import numpy as np
import pytest
from distributed.utils_test import gen_cluster
from tornado.httpclient import AsyncHTTPClient
from tornado.netutil import Resolver
from tornado.websocket import websocket_connect

import dask_coded
from dask_coded import dashboard
from dask_coded.faults import FaultInjector, FaultModel
from dask_coded.plugin import NAME

pytestmark = pytest.mark.filterwarnings("ignore:Sending large graph:UserWarning")

#: The scheduler serves its dashboard on 127.0.0.1, on a free port.
DASHBOARD = {"dashboard": True, "dashboard_address": "127.0.0.1:0"}
SIX_WORKERS = [("127.0.0.1", 1)] * 6
#: Products on the slow worker take about 0.02 s * 100 = 2 s; everything else about 0.02 s.
SHIFT, SLOW_FACTOR = 0.02, 100.0
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _needs_bokeh():
    pytest.importorskip("bokeh", reason="the dashboard needs bokeh (pip install bokeh)")


def _page(s):
    return f"http://127.0.0.1:{s.http_server.port}{dashboard.PATH}"


class _LoopbackResolver(Resolver):
    """Connects to numeric 127.0.0.1 addresses without tornado's resolver thread (a leaked thread)."""

    async def resolve(self, host, port, family=socket.AF_UNSPEC):
        return [(socket.AF_INET, (host, port))]


async def _fetch(url):
    client = AsyncHTTPClient(force_instance=True, resolver=_LoopbackResolver())
    try:
        return await client.fetch(url, raise_error=False, request_timeout=30)
    finally:
        client.close()


async def _coded_run_with_a_slow_worker(c, s, slow_worker):
    """One coded matvec that decodes early and cancels the slow worker's product."""
    await dask_coded.register(c)
    model = FaultModel(
        delay_shift=SHIFT, slow_workers=(slow_worker.address,), slow_factor=SLOW_FACTOR, tasks="products"
    )
    await c.register_plugin(FaultInjector(model), name="faults")
    a = np.random.default_rng(0).standard_normal((600, 40))
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(150, 40))))  # k=4, n=6
    result = await c.compute(dask_coded.dot(coded, np.ones(40)))
    np.testing.assert_allclose(result, a.sum(axis=1))
    return await dask_coded.plugin_stats(c)


def _summary(s):
    """The page's first text block, as built for a new browser session on scheduler ``s``."""
    from bokeh.document import Document
    from bokeh.models import Div

    doc = Document()
    dashboard.coded_doc(s, {}, doc)
    return doc.select_one({"type": Div}).text


@gen_cluster(client=True, nthreads=SIX_WORKERS, scheduler_kwargs=DASHBOARD, timeout=60)
async def test_page_shows_the_plugins_counters_over_http(c, s, *workers):
    _needs_bokeh()
    stats = await _coded_run_with_a_slow_worker(c, s, workers[0])
    assert stats["decodes_early"] >= 1 and stats["cancelled_by_worker"][workers[0].address] == 1
    assert stats["groups_in_flight"] == 0
    response = await _fetch(_page(s))
    assert response.code == 200
    assert f"<title>{dashboard.TITLE}</title>" in response.body.decode()
    summary = _summary(s)
    assert f'>{stats["decodes_early"]}</div><div style="color:#555">decoded early' in summary
    # The client finds the page, and distributed's dashboard lists it in its menu.
    assert await c.run_on_scheduler(dashboard._serves_page)
    assert dashboard.page_url(c.dashboard_link).endswith(f":{s.http_server.port}{dashboard.PATH}")
    status = await _fetch(f"http://127.0.0.1:{s.http_server.port}/status")
    assert status.code == 200 and "individual-coded" in status.body.decode()


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)], scheduler_kwargs=DASHBOARD)
async def test_registering_again_keeps_one_page(c, s, a):
    _needs_bokeh()
    await dask_coded.register(c)
    page = s._dask_coded_page
    await dask_coded.register(c)
    assert s._dask_coded_page is page
    assert sum(app is page for app in s.http_application.applications) == 1
    assert (await _fetch(_page(s))).code == 200


@pytest.mark.slow
@gen_cluster(
    client=False, nthreads=[], scheduler_kwargs={**DASHBOARD, "preload": ["dask_coded.plugin"]}, timeout=60
)
async def test_preloaded_plugin_serves_the_page(s):
    _needs_bokeh()
    assert NAME in s.plugins
    response = await _fetch(_page(s))
    assert response.code == 200 and dashboard.TITLE in response.body.decode()


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_no_page_without_a_dashboard(c, s, a):
    await dask_coded.register(c)
    assert not dashboard.add_page(s)
    assert not await c.run_on_scheduler(dashboard._serves_page)


@pytest.mark.slow
def test_importing_dask_coded_does_not_import_bokeh():
    code = "import sys, dask_coded, dask_coded.plugin; print(sorted(m for m in sys.modules if 'bokeh' in m))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def _browser():
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


class _DevTools:
    """The few DevTools-protocol calls a screenshot needs, over the browser's own websocket."""

    def __init__(self, connection):
        self.connection, self.ids, self.session = connection, itertools.count(1), None

    async def call(self, method, **params):
        message = {"id": next(self.ids), "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        await self.connection.write_message(json.dumps(message))
        while True:  # skip events until our answer arrives
            reply = json.loads(await self.connection.read_message())
            if reply.get("id") == message["id"]:
                assert "error" not in reply, reply["error"]
                return reply["result"]


async def _screenshot(url, out, ready, deadline=60):
    """Open ``url`` in headless Chromium, wait until the JS expression ``ready`` is true, save a PNG.

    Chromium's own ``--screenshot`` shoots at the load event, before Bokeh has pulled the document
    over its websocket (a blank page), so the browser is driven over the DevTools protocol instead.
    Returns what ``ready`` evaluated to.
    """
    with tempfile.TemporaryDirectory() as profile:
        browser = await asyncio.create_subprocess_exec(
            _browser(),
            "--headless",
            "--no-sandbox",  # CI and this machine run as root
            "--disable-gpu",
            "--hide-scrollbars",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "--window-size=1200,1000",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            while True:
                line = (await asyncio.wait_for(browser.stderr.readline(), deadline)).decode()
                assert line, "the browser exited before it listened"
                if match := re.search(r"DevTools listening on (ws://\S+)", line):
                    break
            connection = await websocket_connect(match.group(1), resolver=_LoopbackResolver())
            tools = _DevTools(connection)
            target = await tools.call("Target.createTarget", url="about:blank")
            attached = await tools.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)
            tools.session = attached["sessionId"]
            await tools.call("Page.navigate", url=url)
            value = None
            for _ in range(deadline * 10):  # poll the page's state, not the clock
                result = await tools.call("Runtime.evaluate", expression=ready, returnByValue=True)
                value = result["result"].get("value")
                if value:
                    break
                await asyncio.sleep(0.1)
            shot = await tools.call("Page.captureScreenshot", format="png")
            out.write_bytes(base64.b64decode(shot["data"]))
            connection.close()
            return value
        finally:
            browser.kill()
            await browser.wait()


#: The summary's text once Bokeh has pulled the document and drawn every view, else null.
_RENDERED = """(() => {
    const doc = window.Bokeh && Bokeh.documents[0];
    if (!doc || Object.keys(Bokeh.index).length === 0) return null;
    const views = Object.values(Bokeh.index);
    if (!views.every((view) => view.is_idle === undefined || view.is_idle)) return null;
    return doc.roots()[0].children[0].text;
})()"""


@pytest.mark.slow
@pytest.mark.skipif(_browser() is None, reason=f"no headless browser ({', '.join(BROWSERS)}) on PATH")
@gen_cluster(client=True, nthreads=SIX_WORKERS, scheduler_kwargs=DASHBOARD, timeout=120)
async def test_screenshot_of_the_page(c, s, *workers, tmp_path):
    """A headless browser draws the page after a coded run (pytest keeps the PNG to look at)."""
    _needs_bokeh()
    stats = await _coded_run_with_a_slow_worker(c, s, workers[0])
    out = tmp_path / "coded-page.png"
    summary = await _screenshot(_page(s), out, _RENDERED)
    assert summary and f">{stats['decodes_early']}</div>" in summary
    assert out.stat().st_size > 20_000  # a drawn page, not a blank one
