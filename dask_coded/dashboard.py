"""The scheduler dashboard's Coded page: the plugin's counters, live, at ``/individual-coded``.

Registering the plugin (:func:`dask_coded.register` or ``dask scheduler
--preload dask_coded.plugin``) calls :func:`add_page` from the plugin's
``start``, on the scheduler. A scheduler's Bokeh dashboard is built once, when
the scheduler starts, from a fixed table of pages, and the plugin usually
arrives later; so the page is served by a Bokeh application of its own, built
the way ``distributed`` builds its dashboard and added to the scheduler's HTTP
server beside it (the server asks each application in turn for a path).

Bokeh is imported only here, and only when a page is added to a scheduler
that already serves a Bokeh dashboard: workers and clients never import it,
and a scheduler without a dashboard is left alone. The touches of
``distributed``'s dashboard internals (its Bokeh application factory, theme
and page menu) are all in this module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["PATH", "TITLE", "add_page", "coded_doc", "page_link", "page_rows", "page_url"]

logger = logging.getLogger(__name__)

#: Where the page is served, below the dashboard's prefix (distributed's single-plot pages are
#: ``/individual-*``, which is also how the JupyterLab extension recognises them).
PATH = "/individual-coded"
#: The page's title (the Bokeh document's title).
TITLE = "Dask: Coded"
#: Milliseconds between refreshes, as distributed's own live pages.
_INTERVAL_MS = 500
#: Points kept in the groups-in-flight time series.
_HISTORY = 600
#: The stacked per-worker bars: distinct events, so their sum means something. A cancelled member
#: is also a dropped one, hence "dropped before it ran" = dropped - cancelled.
_BARS = {
    "not started or unneeded": "#8da0cb",
    "cancelled while running": "#fc8d62",
    "wrong, corrected": "#e41a1c",
}


def page_url(dashboard_link: str) -> str:
    """The Coded page's address, from a client's ``dashboard_link`` (which ends in ``/status``).

    Examples
    --------
    >>> page_url("http://127.0.0.1:8787/status")
    'http://127.0.0.1:8787/individual-coded'
    >>> page_url("http://example.org/dask/status")
    'http://example.org/dask/individual-coded'
    """
    base = dashboard_link.rstrip("/")
    if base.endswith("/status"):
        base = base[: -len("/status")]
    return base + PATH


def page_link(client: Any) -> str | None:
    """The Coded page's address on ``client``'s scheduler, or None where it serves no such page.

    The page exists once the plugin is registered on a scheduler whose
    dashboard is on (which needs Bokeh there; the client needs none).
    """
    served = client.run_on_scheduler(_serves_page)
    return page_url(client.dashboard_link) if served else None


def _serves_page(dask_scheduler: Any) -> bool:
    return getattr(dask_scheduler, "_dask_coded_page", None) is not None


def page_rows(stats: Mapping[str, Any], workers: Any = ()) -> list[dict[str, Any]]:
    """One row per worker for the page's table and chart, from :meth:`CodedSchedulerPlugin.stats`.

    ``workers`` are the workers now connected: they are listed even with
    nothing counted yet; departed workers stay while they have counts.
    Members dropped before any worker started them are the row
    ``"unassigned"``. Slowness is the worker's task durations over the
    cluster's, for the same kinds of task.

    Examples
    --------
    >>> stats = {"dropped_by_worker": {"tcp://a:1": 3}, "cancelled_by_worker": {"tcp://a:1": 2},
    ...          "corrections_by_worker": {"tcp://b:1": 1}, "duration_ratios": {"tcp://a:1": 9.5},
    ...          "slow_workers": ["tcp://a:1"]}
    >>> for row in page_rows(stats, ["tcp://b:1", "tcp://c:1"]):
    ...     print(row["worker"], row["dropped"], row["cancelled"], row["corrected"], row["slow"] or "-")
    tcp://a:1 3 2 0 yes
    tcp://b:1 0 0 1 -
    tcp://c:1 0 0 0 -
    """
    dropped = stats.get("dropped_by_worker", {})
    cancelled = stats.get("cancelled_by_worker", {})
    corrected = stats.get("corrections_by_worker", {})
    ratios = stats.get("duration_ratios", {})
    slow = set(stats.get("slow_workers", ()))
    names = set(workers) | set(dropped) | set(cancelled) | set(corrected)
    return [
        {
            "worker": name,
            "dropped": int(dropped.get(name, 0)),
            "cancelled": int(cancelled.get(name, 0)),
            "corrected": int(corrected.get(name, 0)),
            "slowness": round(float(ratios[name]), 2) if name in ratios else float("nan"),
            "slow": "yes" if name in slow else "",
        }
        for name in sorted(names)
    ]


def add_page(scheduler: Any) -> bool:
    """Serve the Coded page on ``scheduler``'s dashboard; False when it has no Bokeh dashboard.

    Idempotent: registering the plugin again keeps the one page, which reads
    whichever plugin is registered at each refresh. Must run on the
    scheduler's event loop (the plugin's ``start`` does).
    """
    dashboard = _bokeh_dashboard(scheduler)
    if dashboard is None:
        return False
    if getattr(scheduler, "_dask_coded_page", None) is not None:
        return True
    from distributed.dashboard.core import BokehApplication
    from tornado.ioloop import IOLoop

    prefix = getattr(dashboard, "prefix", "") or ""
    application = BokehApplication({PATH: coded_doc}, scheduler, prefix=prefix)
    scheduler.http_application.add_application(application)
    application.initialize(IOLoop.current())
    application.start()
    scheduler._dask_coded_page = application
    _add_to_menu(scheduler)
    return True


def _bokeh_dashboard(scheduler: Any) -> Any:
    """The scheduler's Bokeh dashboard application, found without importing Bokeh, or None."""
    applications = getattr(getattr(scheduler, "http_application", None), "applications", ())
    for application in applications:
        if any(cls.__name__ == "BokehTornado" for cls in type(application).__mro__):
            return application
    return None


def _add_to_menu(scheduler: Any) -> None:
    """List the page in the dashboard's "More..." menu, beside distributed's own single plots."""
    try:
        from distributed.dashboard.scheduler import template_variables

        plots = template_variables(scheduler)["plots"]
    except (ImportError, KeyError, TypeError):  # a dashboard without that menu: the page still works
        return
    if not any(plot.get("url") == PATH.strip("/") for plot in plots):
        plots.append({"url": PATH.strip("/"), "name": "Coded"})
        plots.sort(key=lambda plot: plot["name"])


def coded_doc(scheduler: Any, extra: Mapping[str, Any], doc: Any) -> None:
    """Build one browser session's Coded page (Bokeh calls this for every new session)."""
    page = _CodedPage(scheduler)
    page.update()
    doc.add_periodic_callback(page.update, _INTERVAL_MS)
    doc.add_root(page.root)
    doc.title = TITLE
    try:
        from distributed.dashboard.components.scheduler import BOKEH_THEME

        doc.theme = BOKEH_THEME
    except ImportError:  # only the look changes
        pass


def _summary_html(stats: Mapping[str, Any] | None) -> str:
    if stats is None:
        return "<h3>dask-coded</h3><p>The dask-coded plugin is not registered on this scheduler.</p>"
    slow = ", ".join(stats.get("slow_workers", ())) or "none"
    cells = [
        ("groups in flight", stats.get("groups_in_flight", 0)),
        ("decoded early", stats.get("decodes_early", 0)),
        ("late members dropped", stats.get("members_dropped", 0)),
        ("cancelled while running", stats.get("members_cancelled", 0)),
        ("wrong products corrected", stats.get("corrections", 0)),
        ("time saved (s, lower bound)", f"{stats.get('time_saved_estimate', 0.0):.2f}"),
    ]
    boxes = "".join(
        '<div style="display:inline-block;margin:0 28px 6px 0">'
        f'<div style="font-size:26px;font-weight:bold">{value}</div>'
        f'<div style="color:#555">{label}</div></div>'
        for label, value in cells
    )
    return f"<h3 style='margin:4px 0'>dask-coded</h3>{boxes}<div>slow workers: <b>{slow}</b></div>"


class _CodedPage:
    """The Bokeh models of one session's page, refreshed from the plugin's counters."""

    def __init__(self, scheduler: Any) -> None:
        from bokeh.layouts import column
        from bokeh.models import ColumnDataSource, DataTable, Div, FactorRange, Legend, TableColumn
        from bokeh.plotting import figure

        self.scheduler = scheduler
        self.start = time.time()
        self.summary = Div(text=_summary_html(None), sizing_mode="stretch_width")
        self.history = ColumnDataSource({"time": [], "in_flight": []})
        self.timeline = figure(
            title="Coded groups in flight",
            height=180,
            sizing_mode="stretch_width",
            x_axis_label="seconds since this page opened",
            tools="",
            toolbar_location=None,
        )
        self.timeline.line("time", "in_flight", source=self.history, line_width=2)
        self.bars = ColumnDataSource({"worker": [], **{name: [] for name in _BARS}})
        self.chart = figure(
            title="Late members dropped, and wrong products corrected, by worker",
            y_range=FactorRange(),
            height=300,
            sizing_mode="stretch_width",
            tools="hover",
            tooltips="$name: @$name",
            toolbar_location=None,
        )
        stacks = self.chart.hbar_stack(
            list(_BARS), y="worker", height=0.7, color=list(_BARS.values()), source=self.bars
        )
        # Above the bars, not over them.
        legend = Legend(items=[(name, [bar]) for name, bar in zip(_BARS, stacks)], orientation="horizontal")
        self.chart.add_layout(legend, "above")
        self.chart.x_range.start = 0
        self.table_source = ColumnDataSource({key: [] for key in _TABLE_COLUMNS})
        self.table = DataTable(
            source=self.table_source,
            columns=[TableColumn(field=key, title=title) for key, title in _TABLE_COLUMNS.items()],
            height=220,
            sizing_mode="stretch_width",
            index_position=None,
        )
        self.root = column(self.summary, self.timeline, self.chart, self.table, sizing_mode="stretch_both")

    def update(self) -> None:
        from distributed.utils import log_errors

        from .plugin import NAME

        with log_errors():
            plugin = self.scheduler.plugins.get(NAME)
            stats = plugin.stats() if plugin is not None else None
            self.summary.text = _summary_html(stats)
            if stats is None:
                return
            self.history.stream(
                {"time": [time.time() - self.start], "in_flight": [stats["groups_in_flight"]]},
                rollover=_HISTORY,
            )
            rows = page_rows(stats, self.scheduler.workers)
            self.table_source.data = {key: [row[key] for row in rows] for key in _TABLE_COLUMNS}
            labels = [_short(row["worker"]) + (" (slow)" if row["slow"] else "") for row in rows]
            not_started, cancelled, corrected = _BARS
            self.bars.data = {
                "worker": labels,
                not_started: [row["dropped"] - row["cancelled"] for row in rows],
                cancelled: [row["cancelled"] for row in rows],
                corrected: [row["corrected"] for row in rows],
            }
            # Categorical axes run bottom to top: reversed, the bars read in the table's order.
            if list(self.chart.y_range.factors) != labels[::-1]:
                self.chart.y_range.factors = labels[::-1]


def _short(address: str) -> str:
    """A worker's address without its protocol, short enough for an axis label."""
    return address.split("://", 1)[-1]


#: The table's columns: field -> title.
_TABLE_COLUMNS = {
    "worker": "worker",
    "dropped": "late members dropped",
    "cancelled": "cancelled while running",
    "corrected": "wrong products corrected",
    "slowness": "task time / cluster's",
    "slow": "slow",
}
