"""The dashboard's panels during a demo run, drawn as docs/images/dashboard-demo.png.

    .venv/bin/pip install -e '.[docs]'          # matplotlib
    .venv/bin/python deploy/grafana/render.py   # 2.5 minutes; needs Prometheus and mosquitto

Grafana need not run: this starts `crisync demo --follow --metrics PORT` against a private
mosquitto, and a throwaway Prometheus (`prometheus` on the PATH, or /usr/bin/prometheus)
that scrapes the demo every SCRAPE_S seconds into a temporary directory. The demo first
replicates `--objects` objects, then changes a publication every few seconds; the broker
is stopped for a quarter of the run in the middle, so that the outbox and the broker's
availability move. Then every panel of crisync.json beside this file is asked of
Prometheus's HTTP API with the panel's own queries (the dashboard's variables filled in as
Grafana would: $job and $instance from their `label_values` queries, $__rate_interval from
the scrape interval) over the run, and drawn on the dashboard's grid: its rows, titles,
units, thresholds, legends.

It lives beside the dashboard because the dashboard is its one input; nothing in it is
installed with crisync. The parsing half (panels, queries, variables, units) imports
nothing outside the standard library, so the tests check it against the dashboard without
matplotlib, Prometheus or a demo.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DASHBOARD = HERE / "crisync.json"
PICTURE = HERE.parent.parent / "docs" / "images" / "dashboard-demo.png"
JOB = "crisync"  # the job name docs/observability.md asks for
SCRAPE_S = 2  # Prometheus's scrape interval, and the data source's in Grafana's sense
RUN_S = 150  # from the demo's first answer on /metrics to its stop
# The broker stops at this share of the run, for this share of it.
BROKER_STOP_AT, BROKER_DOWN = 0.45, 0.25
OBJECTS = 600


# --- The dashboard: panels, queries, variables (standard library only) ---------------------


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str  # Grafana's legendFormat: {{label}} placeholders


@dataclass(frozen=True)
class Panel:
    """One panel of the dashboard, as much of it as the picture shows."""

    kind: str  # Grafana's type: row, stat, gauge, timeseries, ...
    title: str
    x: int
    y: int
    w: int
    h: int
    targets: tuple[Target, ...]
    defaults: dict[str, Any]  # fieldConfig.defaults: unit, min, max, thresholds, mappings
    options: dict[str, Any]

    @property
    def unit(self) -> str:
        unit: str = self.defaults.get("unit", "short")
        return unit


def panels(dashboard: dict[str, Any]) -> list[Panel]:
    """Every panel and row, in the order of the grid (collapsed rows' panels included)."""
    found = []
    for raw in dashboard["panels"]:
        found.append(raw)
        found.extend(raw.get("panels", []))
    return sorted(
        (
            Panel(
                kind=raw["type"],
                title=raw.get("title", ""),
                x=raw["gridPos"]["x"],
                y=raw["gridPos"]["y"],
                w=raw["gridPos"]["w"],
                h=raw["gridPos"]["h"],
                targets=tuple(
                    Target(t["expr"], t.get("legendFormat", ""))
                    for t in raw.get("targets", [])
                    if "expr" in t
                ),
                defaults=raw.get("fieldConfig", {}).get("defaults", {}),
                options=raw.get("options", {}),
            )
            for raw in found
        ),
        key=lambda p: (p.y, p.x),
    )


@dataclass(frozen=True)
class QueryVariable:
    """A template variable filled from a `label_values(selector, label)` query."""

    name: str
    selector: str  # may name earlier variables
    label: str
    multi: bool  # multi-value or with "All": Grafana writes it as a regex of its values


LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


def query_variables(dashboard: dict[str, Any]) -> list[QueryVariable]:
    """The dashboard's query variables, in its order (a later one may use an earlier one)."""
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = LABEL_VALUES.match(text.strip())
        if match is None:
            raise ValueError(f"variable ${variable['name']}: not a label_values query: {text}")
        found.append(
            QueryVariable(
                name=variable["name"],
                selector=match["selector"] or "",
                label=match["label"],
                multi=bool(variable.get("multi") or variable.get("includeAll")),
            )
        )
    return found


def interval_variables(step_s: int, scrape_s: int, range_s: int) -> dict[str, str]:
    """Grafana's own variables: $__interval is the step, $__rate_interval at least four
    scrapes (Grafana's rule: max(step + scrape interval, 4 scrape intervals))."""
    rate_s = max(step_s + scrape_s, 4 * scrape_s)
    return {
        "__interval": f"{step_s}s",
        "__rate_interval": f"{rate_s}s",
        "__range": f"{range_s}s",
    }


VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def interpolate(expr: str, values: dict[str, str]) -> str:
    """The query with every variable filled in; an unknown variable is an error."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in values:
            raise KeyError(f"${name} in {expr!r}: not a variable of the dashboard")
        return values[name]

    return VARIABLE.sub(value, expr)


def regex_of(values: Sequence[str]) -> str:
    """A multi-value variable as Grafana writes it into a Prometheus query: an alternation
    of the values, regex-escaped, inside a double-quoted PromQL string (so `\\.` twice)."""
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", v).replace("\\", "\\\\") for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def resolve_variables(
    variables: Sequence[QueryVariable], label_values: Callable[[str, str], list[str]]
) -> dict[str, str]:
    """Each variable's value, as Grafana picks it on load: the first value, or "All" for a
    variable that offers it. `label_values(selector, label)` asks the data source."""
    values: dict[str, str] = {}
    for variable in variables:
        selector = interpolate(variable.selector, values)
        found = sorted(label_values(selector, variable.label))
        if not found:
            raise LookupError(
                f"${variable.name}: no {variable.label} in {selector or 'any series'}"
            )
        values[variable.name] = regex_of(found) if variable.multi else found[0]
    return values


def legend_of(legend: str, labels: dict[str, str]) -> str:
    """A series' name: its legendFormat with the labels filled in, else its label set."""
    if legend:
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), legend).strip()
    shown = {k: v for k, v in labels.items() if k not in {"__name__", "job", "instance"}}
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(shown.items())) + "}"


# Grafana's unit ids → how a value is written.
def _scaled(value: float, steps: Sequence[tuple[float, str]]) -> str:
    for size, suffix in steps:
        if abs(value) >= size:
            return f"{_number(value / size)}{suffix}"
    return _number(value)


def _number(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    written = f"{value:.{min(digits, 3)}f}"
    return written.rstrip("0").rstrip(".") if "." in written else written


def _seconds(value: float) -> str:
    for size, suffix in ((86400, " day"), (3600, " hour"), (60, " min"), (1, " s")):
        if abs(value) >= size:
            return f"{_number(value / size)}{suffix}"
    return f"{_number(value * 1000)} ms" if value else "0 s"


THOUSANDS = ((1e9, " Bil"), (1e6, " Mil"), (1e3, " K"))
UNITS: dict[str, Callable[[float], str]] = {
    "short": lambda v: _scaled(v, THOUSANDS),
    "none": _number,
    "ops": lambda v: _scaled(v, THOUSANDS) + " ops/s",
    "reqps": lambda v: _scaled(v, THOUSANDS) + " req/s",
    "s": _seconds,
    "ms": lambda v: _seconds(v / 1000),
    "percent": lambda v: f"{_number(v)}%",
    "percentunit": lambda v: f"{_number(v * 100)}%",
}


def formatted(unit: str, value: float) -> str:
    if unit not in UNITS:
        raise KeyError(f"unit {unit!r}: the picture cannot write it (add it to UNITS)")
    return UNITS[unit](value)


def mapped(panel: Panel, value: float) -> str:
    """The value as the panel shows it: through its value mappings, else in its unit."""
    for mapping in panel.defaults.get("mappings", []):
        if mapping.get("type") == "value":
            text = mapping["options"].get(_number(value), {}).get("text")
            if text is not None:
                return str(text)
    return formatted(panel.unit, value)


# --- A run: mosquitto, the demo, a throwaway Prometheus -------------------------------------


@dataclass(frozen=True)
class Series:
    name: str
    times: list[float]  # Unix seconds
    values: list[float]


class Prometheus:
    """A Prometheus scraping one target, with its data in a directory of its own."""

    def __init__(self, binary: str, workdir: Path, target: str, scrape_s: int) -> None:
        from crisync.sim.server import free_port

        self.url = f"http://127.0.0.1:{free_port()}"
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": f"{scrape_s}s", "scrape_timeout": "1s"},
                    "scrape_configs": [
                        {"job_name": JOB, "static_configs": [{"targets": [target]}]}
                    ],
                }
            )
        )
        self._command = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={self.url.removeprefix('http://')}",
        ]
        self._log = workdir / "prometheus.log"

    @contextmanager
    def running(self) -> Iterator[Prometheus]:
        with self._log.open("wb") as log:
            process = subprocess.Popen(self._command, stdout=log, stderr=log)
        try:
            _wait_for(f"{self.url}/-/ready", process, self._log)
            yield self
        finally:
            process.terminate()
            process.wait(timeout=30)

    def _get(self, path: str, **params: str) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=30) as answer:
            document = json.load(answer)
        if document["status"] != "success":
            raise RuntimeError(f"Prometheus: {document}")
        return document["data"]

    def label_values(self, selector: str, label: str) -> list[str]:
        params = {"match[]": selector} if selector else {}
        values: list[str] = self._get(f"/api/v1/label/{label}/values", **params)
        return values

    def query_range(
        self, target: Target, values: dict[str, str], start: float, end: float, step: int
    ) -> list[Series]:
        expr = interpolate(target.expr, values)
        found = self._get(
            "/api/v1/query_range", query=expr, start=str(start), end=str(end), step=str(step)
        )
        return [
            Series(
                legend_of(target.legend, series["metric"]),
                [float(t) for t, _ in series["values"]],
                [float(v) for _, v in series["values"]],
            )
            for series in found["result"]
        ]


def _wait_for(url: str, process: subprocess.Popen[bytes], log: Path, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{log.stem} ended:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answered on {url} within {within} s")


@dataclass(frozen=True)
class Run:
    start: float
    end: float
    broker_down: tuple[float, float]


@contextmanager
def demo_run(
    prometheus_binary: str, workdir: Path, objects: int, seconds: float
) -> Iterator[tuple[Run, Prometheus]]:
    """The demo under Prometheus's eye, with the broker stopped a while; yields once the demo
    has stopped, with Prometheus still up to be asked."""
    from crisync.sim.broker import MosquittoBroker
    from crisync.sim.server import free_port

    broker = MosquittoBroker(workdir)
    broker.start()
    port = free_port()
    demo_log = workdir / "demo.log"
    command = [sys.executable, "-m", "crisync", "demo", "--follow", "--objects", str(objects)]
    command += ["--mqtt", broker.url, "--metrics", str(port)]
    prometheus = Prometheus(prometheus_binary, workdir, f"127.0.0.1:{port}", SCRAPE_S)
    try:
        with prometheus.running(), demo_log.open("wb") as log:
            demo = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            try:
                _wait_for(f"http://127.0.0.1:{port}/metrics", demo, demo_log)
                start = time.time()
                say(f"the demo answers on :{port}; Prometheus scrapes it every {SCRAPE_S} s")
                time.sleep(BROKER_STOP_AT * seconds)
                broker.stop()
                stopped = time.time()
                say(f"broker stopped for {BROKER_DOWN * seconds:.0f} s")
                time.sleep(BROKER_DOWN * seconds)
                broker.start()
                back = time.time()
                say("broker back")
                time.sleep(max(0.0, start + seconds - time.time()))
                end = time.time()
            finally:
                demo.send_signal(signal.SIGTERM)
                demo.wait(timeout=60)
            if demo.returncode != 0:
                raise RuntimeError(f"the demo exited {demo.returncode}: see {demo_log}")
            yield Run(start, end, (stopped, back)), prometheus
    finally:
        broker.stop()


def say(text: str) -> None:
    print(f"render: {text}", file=sys.stderr, flush=True)


# --- Drawing (matplotlib) --------------------------------------------------------------------

# Grafana's dark theme, its named colours and its classic palette.
BACKGROUND, PANEL, TEXT, MUTED, GRID = "#111217", "#181b1f", "#ccccdc", "#8e8e9e", "#2c3235"
NAMED = {
    "green": "#73BF69",
    "red": "#F2495C",
    "yellow": "#FADE2A",
    "orange": "#FF9830",
    "blue": "#5794F2",
    "purple": "#B877D9",
    "text": TEXT,
}
PALETTE = ("#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0")
# One grid column and row of Grafana's 24-column grid, the header above it, in pixels.
COLUMN_PX, ROW_PX, HEADER_PX, MARGIN_PX, GAP_PX, DPI = 66, 30, 70, 10, 8, 100
TITLE_PX, LEGEND_ROW_PX, CALC_COLUMN_PX = 26, 13, 90
CALCS: dict[str, tuple[str, Callable[[list[float]], float]]] = {
    "lastNotNull": ("Last *", lambda v: v[-1]),
    "last": ("Last", lambda v: v[-1]),
    "max": ("Max", max),
    "min": ("Min", min),
    "mean": ("Mean", lambda v: sum(v) / len(v)),
}


def calculated(calc: str, values: list[float]) -> float | None:
    """A reduction over the values Prometheus gave (NaN, e.g. 0/0, is no value)."""
    present = [v for v in values if not math.isnan(v)]
    return CALCS.get(calc, CALCS["lastNotNull"])[1](present) if present else None


def threshold_color(panel: Panel, value: float) -> str:
    color = "green"
    for step in panel.defaults.get("thresholds", {}).get("steps", []):
        if step["value"] is None or value >= step["value"]:
            color = step["color"]
    return NAMED.get(color, color)


@dataclass(frozen=True)
class Canvas:
    """The figure, addressed in pixels from its top left as Grafana's grid is."""

    figure: Any
    width_px: float
    height_px: float

    def axes(self, left: float, top: float, width: float, height: float) -> Any:
        axes = self.figure.add_axes(
            (
                left / self.width_px,
                1 - (top + height) / self.height_px,
                width / self.width_px,
                height / self.height_px,
            )
        )
        axes.set_axis_off()
        # Drawn in fractions of itself: 0 to 1 both ways, whatever is drawn.
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        axes.set_autoscale_on(False)
        return axes

    def text(self, left: float, top: float, text: str, **style: Any) -> None:
        self.figure.text(left / self.width_px, 1 - top / self.height_px, text, **style)


def draw(
    dashboard: dict[str, Any],
    data: dict[tuple[int, int], list[Series]],
    run: Run,
    subtitle: str,
    path: Path,
) -> None:
    """`data`: each panel's series, by its (y, x) on the grid."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from PIL import Image  # matplotlib's own dependency

    plt.rcParams.update({"font.size": 8, "font.family": "DejaVu Sans"})
    grid = panels(dashboard)
    width_px = 2 * MARGIN_PX + 24 * COLUMN_PX
    height_px = HEADER_PX + max(p.y + p.h for p in grid) * ROW_PX + MARGIN_PX
    figure = plt.figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor=BACKGROUND)
    canvas = Canvas(figure, width_px, height_px)
    canvas.text(MARGIN_PX, 28, dashboard["title"], color=TEXT, fontsize=15)
    canvas.text(MARGIN_PX, 52, subtitle, color=MUTED, fontsize=9)
    for panel in grid:
        left = MARGIN_PX + panel.x * COLUMN_PX
        top = HEADER_PX + panel.y * ROW_PX
        width, height = panel.w * COLUMN_PX - GAP_PX, panel.h * ROW_PX - GAP_PX
        if panel.kind == "row":
            canvas.text(left, top + 20, panel.title, color=TEXT, fontsize=11, fontweight="bold")
            continue
        frame = canvas.axes(left, top, width, height)
        frame.add_patch(Rectangle((0, 0), 1, 1, color=PANEL, transform=frame.transAxes))
        single = panel.kind in {"stat", "gauge", "bargauge"}
        frame.text(
            0.5 if single else 0.01,
            1 - 14 / height,
            panel.title,
            color=TEXT,
            fontsize=9,
            fontweight="bold",
            ha="center" if single else "left",
            va="center",
            transform=frame.transAxes,
        )
        series = [s for s in data[(panel.y, panel.x)] if calculated("last", s.values) is not None]
        area = (left, top + TITLE_PX, width, height - TITLE_PX)
        if not series:
            frame.text(0.5, 0.45, "No data", color=MUTED, fontsize=12, ha="center")
        elif single:
            _draw_stat(canvas, panel, series, area)
        else:  # a time series; any other kind is drawn as one
            _draw_timeseries(canvas, panel, series, area, run)
    drawn = io.BytesIO()
    figure.savefig(drawn, format="png", dpi=DPI, facecolor=BACKGROUND)
    plt.close(figure)
    # 256 colours are plenty for flat panels and thin lines, at a third of the bytes.
    picture = Image.open(drawn).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True
    )


def _draw_stat(
    canvas: Canvas, panel: Panel, series: list[Series], area: tuple[float, float, float, float]
) -> None:
    """Grafana's stat: each series a tile, its value (the panel's reduction) on a background
    in its threshold's colour, with a sparkline of the run."""
    from matplotlib.patches import Rectangle

    left, top, width, height = area
    calc = panel.options.get("reduceOptions", {}).get("calcs", ["lastNotNull"])[0]
    tile = width / len(series)
    for n, one in enumerate(series):
        value = calculated(calc, one.values)
        assert value is not None  # series without a value are left out
        axes = canvas.axes(left + n * tile + 4, top, tile - 8, height - 6)
        color = threshold_color(panel, value)
        axes.add_patch(Rectangle((0, 0), 1, 1, color=color, alpha=0.85, transform=axes.transAxes))
        present = [(t, v) for t, v in zip(one.times, one.values, strict=True) if not math.isnan(v)]
        if len(present) > 1:
            (t0, _), (t1, _) = present[0], present[-1]
            low, high = min(v for _, v in present), max(v for _, v in present)
            xs = [(t - t0) / (t1 - t0) for t, _ in present]
            ys = [0.02 + 0.3 * (v - low) / ((high - low) or 1) for _, v in present]
            axes.fill_between(xs, ys, color="white", alpha=0.18, linewidth=0)
        if len(series) > 1:
            axes.text(0.5, 0.84, one.name, color=BACKGROUND, fontsize=8, ha="center")
        axes.text(
            0.5,
            0.5,
            mapped(panel, value),
            color=BACKGROUND,
            fontsize=20 if len(series) == 1 else 15,
            fontweight="bold",
            ha="center",
            va="center",
        )


def _draw_timeseries(
    canvas: Canvas,
    panel: Panel,
    series: list[Series],
    area: tuple[float, float, float, float],
    run: Run,
) -> None:
    """The lines over the run (the broker's outage shaded), and a table legend below."""
    import matplotlib.dates as mdates
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    left, top, width, height = area
    legend_rows = min(len(series), max(1, int((height - 100) / LEGEND_ROW_PX)))
    legend_px = 16 + LEGEND_ROW_PX * legend_rows
    plot = canvas.axes(left + 58, top, width - 70, height - 22 - legend_px)
    plot.set_axis_on()
    plot.set_facecolor(PANEL)
    for spine in plot.spines.values():
        spine.set_visible(False)
    plot.tick_params(colors=MUTED, labelsize=7, length=0)
    plot.grid(color=GRID, linewidth=0.6)
    plot.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
    plot.xaxis.set_major_locator(mdates.SecondLocator(bysecond=(0, 30)))
    plot.yaxis.set_major_formatter(FuncFormatter(lambda v, _: formatted(panel.unit, v)))
    plot.yaxis.set_major_locator(MaxNLocator(4))
    stopped, back = (datetime.fromtimestamp(t, UTC) for t in run.broker_down)
    plot.axvspan(stopped, back, color=NAMED["red"], alpha=0.08, linewidth=0)
    stepped = panel.defaults.get("custom", {}).get("lineInterpolation") == "stepAfter"
    for n, one in enumerate(series):
        color = PALETTE[n % len(PALETTE)]
        stamps = [datetime.fromtimestamp(t, UTC) for t in one.times]
        if stepped:
            plot.step(stamps, one.values, where="post", color=color, linewidth=1.2)
        else:
            plot.plot(stamps, one.values, color=color, linewidth=1.2)
            plot.fill_between(stamps, one.values, color=color, alpha=0.08, linewidth=0)
    plot.set_xlim(datetime.fromtimestamp(run.start, UTC), datetime.fromtimestamp(run.end, UTC))
    highest = max(calculated("max", s.values) or 0 for s in series)
    low, high = panel.defaults.get("min", 0), panel.defaults.get("max")
    plot.set_ylim(low, high * 1.05 if high is not None else highest * 1.1 or 1)
    _draw_legend(
        canvas, panel, series, left=left + 8, top=top + height - legend_px - 4, rows=legend_rows
    )


def _draw_legend(
    canvas: Canvas, panel: Panel, series: list[Series], *, left: float, top: float, rows: int
) -> None:
    """Grafana's table legend: a line of colour, the name, and a column per calculation."""
    width = panel.w * COLUMN_PX - GAP_PX - 16
    height = 16 + LEGEND_ROW_PX * rows
    calcs = [c for c in panel.options.get("legend", {}).get("calcs", []) if c in CALCS]
    axes = canvas.axes(left, top, width, height)

    def at(x_px: float, row: int) -> tuple[float, float]:
        return x_px / width, 1 - (8 + LEGEND_ROW_PX * row) / height

    def column(c: int) -> float:
        return width - CALC_COLUMN_PX * (len(calcs) - 1 - c) - 4

    small = {"fontsize": 7, "va": "center"}
    for c, calc in enumerate(calcs):
        axes.text(*at(column(c), 0), CALCS[calc][0], color=NAMED["blue"], ha="right", **small)
    # The largest first: a legend longer than the panel shows those.
    ranked = sorted(enumerate(series), key=lambda pair: -(calculated("max", pair[1].values) or 0))
    for row, (n, one) in enumerate(ranked[:rows], start=1):
        if row == rows and len(series) > rows:
            axes.text(*at(0, row), f"… and {len(series) - rows + 1} more", color=MUTED, **small)
            break
        x0, y = at(0, row)
        axes.plot([x0, x0 + 14 / width], [y, y], color=PALETTE[n % len(PALETTE)], linewidth=2)
        axes.text(*at(20, row), one.name, color=TEXT, **small)
        for c, calc in enumerate(calcs):
            value = calculated(calc, one.values)
            shown = "-" if value is None else formatted(panel.unit, value)
            axes.text(*at(column(c), row), shown, color=TEXT, ha="right", **small)


# --- The command -----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=OBJECTS, help="the demo's objects")
    parser.add_argument("--seconds", type=int, default=RUN_S, help="how long the demo runs")
    parser.add_argument("--out", type=Path, default=PICTURE, help="the picture (PNG)")
    parser.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    args = parser.parse_args()
    # What the end needs, checked before three minutes of demo.
    if importlib.util.find_spec("matplotlib") is None:
        say("matplotlib is missing: pip install -e '.[docs]'")
        return 2
    if shutil.which(args.prometheus) is None:
        say(f"no Prometheus at {args.prometheus} (Debian: apt-get install prometheus)")
        return 2
    dashboard = json.loads(DASHBOARD.read_text())
    variables = query_variables(dashboard)
    with (
        tempfile.TemporaryDirectory(prefix="crisync-render-") as workdir,
        demo_run(args.prometheus, Path(workdir), args.objects, args.seconds) as (run, prometheus),
    ):
        range_s = round(run.end - run.start)
        step = max(SCRAPE_S, math.ceil(range_s / 500))
        values = interval_variables(step, SCRAPE_S, range_s)
        values |= resolve_variables(variables, prometheus.label_values)
        data = {
            (panel.y, panel.x): [
                series
                for target in panel.targets
                for series in prometheus.query_range(target, values, run.start, run.end, step)
            ]
            for panel in panels(dashboard)
            if panel.kind != "row"
        }
    began = datetime.fromtimestamp(run.start, UTC)
    subtitle = (
        f"crisync demo --follow --objects {args.objects}, {began:%Y-%m-%d %H:%M:%S} UTC + "
        f"{range_s} s, scraped every {SCRAPE_S} s; the broker stopped for "
        f"{run.broker_down[1] - run.broker_down[0]:.0f} s "
        f"(shaded). Drawn by deploy/grafana/render.py from the panels' own queries."
    )
    draw(dashboard, data, run, subtitle, args.out)
    say(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
