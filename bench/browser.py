"""Browser: the map page in headless Chromium with 5,000 trackers in view.

The issue: "the map page in headless Chromium with 5,000 trackers in view
updating every second; report the share of main-thread time spent", target
"under a quarter of the main thread".

The server is the production layout, not the demo: daphne serving the page and
the hub, ``consume_events --source simulator`` feeding 5,000 trackers on the
Helsinki routes (two city loops and the road to Tampere), each reporting once
a second, through Redis and a scratch PostgreSQL database. The one-process demo
does not keep up with 5,000 events/s (its lag grows by about a second every
ten seconds on a 2-core machine even with no page watching), and a starved
page would look cheaper than it is.

The page opens at ``VIEW`` in a 1280x800 viewport, where every route is in
view. After the trackers appear and a warm-up, a few snapshots of
``window.trackerMap.trackers()`` (outside the measured window, as that call
costs main-thread time) check that ~5,000 trackers are in view and that each
moves about once a second. Then, over the window, the DevTools ``Performance``
domain's counters give the main thread's busy share (TaskDuration over wall
time) and its script, layout and style parts; an init script counts the
animation frames the page asks for, long tasks, and the ``locationUpdated``
records that arrive on the WebSocket.

The tracker list beside the map is open throughout, holding every tracker:
the 5,000 moving ones and ``IDLE_TRACKERS`` more registered before the start
(half never seen, half offline far from the view), 10,000 in all. After the
window, the search box is typed into a key at a time: each keystroke's time
until the list's rows are in the page, and until the next animation frame.

Chromium runs headless with ``--disable-gpu``, so the canvas is drawn and
rasterised in software on the main thread: a pessimistic setting for a canvas
map. The busy share is wall time of main-thread tasks, so on a machine short
of cores a descheduled main thread counts as busy; the rows also give the main
thread's CPU time and the cores every process on the machine used meanwhile.

    python -m bench.browser [--quick|--full] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from bench import common
from tests import support

if TYPE_CHECKING:
    from playwright.sync_api import CDPSession, Page

TRACKERS = 5_000
# Registered before the start and never moving, so the tracker list holds 10,000.
IDLE_TRACKERS = 5_000
# Typed into the list's search box a key at a time, each query after clearing it.
QUERIES = ("helsinki loop", "idle 04", "tampere", "3f", "idle unit 0999")
ROUTES = "helsinki"
SEED = 1
VIEWPORT = {"width": 1280, "height": 800}
# Zoom 8 over the middle of the Helsinki routes: the city loops (60.17 N, 24.95 E)
# and the road to Tampere (61.50 N, 23.75 E) are all in view, 24 map cells.
VIEW = "#8/60.83/24.35"
TARGET_SHARE = 0.25
# Cores used by other processes during the window beyond which the machine was
# short of cores for the page (PostgreSQL and Redis take about 0.1-0.2).
CONTENDED_CORES = 0.5
SCREENSHOT = support.ARTIFACTS / "browser-map.png"


class Mode:
    def __init__(self, *, window: float, slices: int, samples: int) -> None:
        self.window = window  # seconds measured
        self.slices = slices  # the window in this many parts, to show how steady it is
        self.samples = samples  # one-second snapshots of the trackers before the window


QUICK = Mode(window=20, slices=4, samples=2)
FULL = Mode(window=60, slices=6, samples=4)
WARM_UP_SECONDS = 5.0

# Installed before any page script: counts what the page receives and draws.
INIT_SCRIPT = r"""
(() => {
  const bench = {};
  const reset = () => Object.assign(bench, {
    updates: 0, messages: 0, chars: 0, frames: 0,
    longTasks: 0, longTaskMs: 0, longTaskMaxMs: 0,
  });
  reset();
  let lastFrame = -1;
  Object.defineProperty(window, "__bench", { value: { counters: bench, reset } });

  // Every locationUpdated record on the hub's WebSocket (one per tracker position).
  const count = (event) => {
    const data = event.data;
    if (typeof data !== "string") return;
    bench.messages += 1;
    bench.chars += data.length;
    for (let at = data.indexOf("locationUpdated"); at !== -1; at = data.indexOf("locationUpdated", at + 15)) {
      bench.updates += 1;
    }
  };
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", count);
    }
  };

  // Animation frames in which the page (or Leaflet) ran a callback.
  const nativeRequest = window.requestAnimationFrame.bind(window);
  window.requestAnimationFrame = (callback) =>
    nativeRequest((time) => {
      if (time !== lastFrame) {
        lastFrame = time;
        bench.frames += 1;
      }
      callback(time);
    });

  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      bench.longTasks += 1;
      bench.longTaskMs += entry.duration;
      bench.longTaskMaxMs = Math.max(bench.longTaskMaxMs, entry.duration);
    }
  }).observe({ type: "longtask" });
})();
"""

# One pass over the page's trackers: each one's timestamp, and how many are in view.
SNAPSHOT_SCRIPT = """() => {
  const bounds = window.trackerMap.map.getBounds();
  const stamps = {};
  let inView = 0;
  for (const tracker of window.trackerMap.trackers()) {
    stamps[tracker.id] = tracker.timestamp;
    if (bounds.contains([tracker.latitude, tracker.longitude])) inView += 1;
  }
  const badge = document.querySelector("[data-status-count]").textContent;
  return { at: Date.now(), stamps, inView, badge };
}"""

METRICS = (
    "Timestamp",
    "TaskDuration",
    "ScriptDuration",
    "LayoutDuration",
    "RecalcStyleDuration",
    "TaskOtherDuration",
    "V8CompileDuration",
    "ThreadTime",
    "ProcessTime",
    "JSHeapUsedSize",
    "LayoutCount",
    "RecalcStyleCount",
)
# IDLE_TRACKERS trackers that never move: half never seen, half last seen a day
# ago in the South Pacific (offline, and far from the view).
SEED_IDLE_TRACKERS = f"""
import math, uuid
from datetime import UTC, datetime, timedelta
from django.conf import settings
from tracking.models import Tracker
seen = datetime.now(UTC) - timedelta(days=1)
size = settings.TRACKING_GRID_DEGREES
rows = []
for n in range({IDLE_TRACKERS}):
    row = Tracker(id=uuid.uuid4(), name=f"Idle unit {{n:04d}}")
    if n % 2:
        row.latitude, row.longitude = -40.0 - n / 1000, -120.0
        row.position_at = row.ordered_at = seen
        row.cell_x, row.cell_y = math.floor(row.longitude / size), math.floor(row.latitude / size)
    rows.append(row)
Tracker.objects.bulk_create(rows, batch_size=1000)
"""

# Once: each keystroke in the list's search box, the time from the key until
# its input is handled (the list filters and renders in the handler) and until
# the next animation frame starts.
KEYSTROKE_SCRIPT = """() => {
  const search = document.querySelector(".tracker-search");
  const timings = [];
  let pressed = null;
  search.addEventListener("keydown", (event) => { pressed = event.timeStamp; }, { capture: true });
  search.addEventListener("input", () => {
    if (pressed === null) return;
    const start = pressed;
    pressed = null;
    const handled = performance.now() - start;
    requestAnimationFrame(() => timings.push({ handled, frame: performance.now() - start }));
  });
  window.__keystrokes = timings;
}"""

# The tracker list's own modules (collectstatic may put a hash in their names),
# whose share of the main thread is sampled.
LIST_MODULES = re.compile(r"/(tracker-list|roster|tracker-search)(\.[0-9a-f]+)?\.js$")
PROFILE_SECONDS = 10.0
LAG_LINE = re.compile(r"(\d+) events/s .*lag median ([\d.]+) s, p99 ([\d.]+) s")


def run(*, quick: bool, list_open: bool = True) -> dict[str, Any]:
    if not Path(support.CHROMIUM).exists():
        raise RuntimeError(f"{support.CHROMIUM} is missing: apt-get install chromium")
    mode = QUICK if quick else FULL
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-browser-")))
        url, servers = stack.enter_context(_servers(folder))
        figures = _measure(url, mode, servers=servers, folder=folder, list_open=list_open)
        figures["server"].update(_server_lag(folder / "consume_events.log", figures["window_at"]))
    figures.pop("window_at")
    figures["mode"] = "quick" if quick else "full"
    figures["wall_seconds"] = round(time.monotonic() - started, 1)
    return figures


@contextlib.contextmanager
def _servers(folder: Path) -> Iterator[tuple[str, list[int]]]:
    """daphne and consume_events on Redis and a scratch PostgreSQL database."""
    with contextlib.ExitStack() as stack:
        database = stack.enter_context(common.scratch_postgres_database())
        redis_url = stack.enter_context(common.running_redis())
        if redis_url is None:
            raise RuntimeError("no Redis answers and redis-server is not installed")
        env = common.base_env(
            DATABASE_URL=database,
            REDIS_URL=redis_url,
            CHANNEL_LAYER_PREFIX=f"bench-browser-{secrets.token_hex(4)}",
            DEBUG="0",
            SECRET_KEY=secrets.token_urlsafe(48),
            # Plain HTTP on this machine, and a public map (no sign-in in the benchmark).
            SECURE_SSL_REDIRECT="0",
            SESSION_COOKIE_SECURE="0",
            CSRF_COOKIE_SECURE="0",
            MAP_PUBLIC="1",
            STATIC_ROOT=str(folder / "static"),
            MAP_TILE_URL="",
            TRACKING_PROGRESS_SECONDS="5",
        )
        with ThreadPoolExecutor(2) as pool:
            setup = [
                pool.submit(common.manage, ["migrate", "--noinput"], env=env),
                pool.submit(common.manage, ["collectstatic", "--noinput"], env=env),
            ]
            for future in setup:
                done = future.result()
                if done.returncode != 0:
                    raise RuntimeError(f"{' '.join(done.args[2:])} failed:\n{done.stderr[-2000:]}")
        seeded = common.manage(["shell", "-c", SEED_IDLE_TRACKERS], env=env)
        if seeded.returncode != 0:
            raise RuntimeError(f"registering the idle trackers failed:\n{seeded.stderr[-2000:]}")
        port = common.free_port()
        daphne = stack.enter_context(
            common.background(common.daphne_command(port), env=env, log=folder / "daphne.log")
        )
        consumer = stack.enter_context(
            common.background(
                [
                    common.PYTHON,
                    "manage.py",
                    "consume_events",
                    "--source",
                    "simulator",
                    "--routes",
                    ROUTES,
                    "--trackers",
                    str(TRACKERS),
                    "--seed",
                    str(SEED),
                ],
                env=env,
                log=folder / "consume_events.log",
            )
        )
        try:
            common.wait_for_port("127.0.0.1", port, timeout=60, process=daphne)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(
                f"daphne did not start: {exc}\n{_tail(folder / 'daphne.log')}"
            ) from None
        yield f"http://127.0.0.1:{port}/", [daphne.pid, consumer.pid]
        if consumer.poll() is not None:
            raise RuntimeError(f"consume_events exited:\n{_tail(folder / 'consume_events.log')}")


def _measure(
    url: str, mode: Mode, *, servers: list[int], folder: Path, list_open: bool
) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=support.CHROMIUM, args=support.CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
            context.add_init_script(INIT_SCRIPT)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")

            opened = time.monotonic()
            page.goto(url + VIEW)
            page.wait_for_function(
                "() => window.trackerMap && window.trackerMap.status() === 'live'", timeout=30_000
            )
            try:
                page.wait_for_function(
                    f"() => window.trackerMap.trackers().length >= {int(TRACKERS * 0.98)}",
                    polling=500,
                    timeout=30_000,
                )
            except Exception as exc:
                shown = page.evaluate("window.trackerMap.trackers().length")
                raise RuntimeError(
                    f"only {shown} trackers on the page after 30 s ({exc}); server log:\n"
                    f"{_tail(folder / 'consume_events.log')}"
                ) from None
            appeared = time.monotonic() - opened
            page.wait_for_function(
                f"() => window.trackerMap.list().total >= {TRACKERS + IDLE_TRACKERS}",
                polling=500,
                timeout=60_000,
            )
            listed = time.monotonic() - opened
            if not list_open:  # to compare: the map alone, as wide as the viewport
                page.click(".side-panel-toggle")
            time.sleep(WARM_UP_SECONDS)

            check = _check_updates(page, mode.samples)
            time.sleep(1.0)  # let the snapshots' garbage go before measuring

            window_at = time.time()
            page.evaluate("window.__bench.reset()")
            with (
                common.measured(servers) as server_usage,
                common.measured(_chromium_pids()) as browser_usage,
            ):
                machine_before = psutil.cpu_times()
                slices = [_metrics(cdp)]
                for _ in range(mode.slices):
                    time.sleep(mode.window / mode.slices)
                    slices.append(_metrics(cdp))
                machine_after = psutil.cpu_times()
            counters = page.evaluate("({...window.__bench.counters})")
            list_state = page.evaluate("window.trackerMap.list()")

            list_profile = _list_share(cdp, PROFILE_SECONDS)
            final = page.evaluate(SNAPSHOT_SCRIPT)
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
            if not list_open:
                page.click(".side-panel-toggle")
            keystrokes = _type_searches(page)
        finally:
            browser.close()

    first, last = slices[0], slices[-1]
    wall = last["Timestamp"] - first["Timestamp"]

    def share(name: str) -> float:
        return (last[name] - first[name]) / wall

    slice_shares = [
        (after["TaskDuration"] - before["TaskDuration"])
        / (after["Timestamp"] - before["Timestamp"])
        for before, after in itertools.pairwise(slices)
    ]
    return {
        "trackers": TRACKERS,
        "view": VIEW,
        "viewport": f"{VIEWPORT['width']}x{VIEWPORT['height']}",
        "cpus": os.cpu_count(),
        "seconds_until_trackers_shown": round(appeared, 1),
        "window_seconds": round(wall, 1),
        "window_at": window_at,
        "main_thread": {
            "busy_share": share("TaskDuration"),
            "busy_share_by_slice": slice_shares,
            "script_share": share("ScriptDuration"),
            "layout_share": share("LayoutDuration"),
            "style_share": share("RecalcStyleDuration"),
            "other_share": share("TaskOtherDuration"),
            "compile_share": share("V8CompileDuration"),
            "cpu_share": share("ThreadTime"),
            "renderer_process_cores": share("ProcessTime"),
            "layouts_per_second": share("LayoutCount"),
            "style_recalcs_per_second": share("RecalcStyleCount"),
            "js_heap_mib": last["JSHeapUsedSize"] / 2**20,
        },
        "page": {
            "frames_per_second": counters["frames"] / wall,
            "long_tasks": counters["longTasks"],
            "long_tasks_per_minute": counters["longTasks"] / wall * 60,
            "long_task_max_ms": counters["longTaskMaxMs"],
            "long_task_total_share": counters["longTaskMs"] / 1000 / wall,
            "updates_per_second": counters["updates"] / wall,
            "messages_per_second": counters["messages"] / wall,
            "kib_per_second": counters["chars"] / 1024 / wall,
            "errors": errors,
        },
        "list": {
            "open": list_open,
            "trackers": list_state["total"],
            "rows_in_page": list_state["rowsInPage"],
            "profile": list_profile,
            "seconds_until_listed": round(listed, 1),
            "keystrokes": len(keystrokes),
            "keystroke_handled_ms_median": common.median([k["handled"] for k in keystrokes]),
            "keystroke_handled_ms_p90": common.percentile([k["handled"] for k in keystrokes], 0.9),
            "keystroke_frame_ms_median": common.median([k["frame"] for k in keystrokes]),
            "keystroke_frame_ms_p90": common.percentile([k["frame"] for k in keystrokes], 0.9),
            "rows_in_page_while_typing_max": max((k["rows"] for k in keystrokes), default=0),
        },
        "check": {
            **check,
            "trackers_after": len(final["stamps"]),
            "in_view_after": final["inView"],
        },
        "server": {
            "layout": "daphne + consume_events --source simulator, Redis, PostgreSQL",
            "cores": server_usage.cpu_share,
            "peak_rss_mib": server_usage.peak_rss_bytes / 2**20,
        },
        "browser_cores": browser_usage.cpu_share,
        # Every process on the machine: on a small machine other work competes
        # with the page, and a descheduled main thread counts as busy.
        "machine_cores_busy": _cores_busy(machine_before, machine_after),
        "screenshot": str(SCREENSHOT.relative_to(common.ROOT)),
    }


def _list_share(cdp: CDPSession, seconds: float) -> dict[str, float]:
    """Sample the page's JavaScript for ``seconds`` (after the measured window, as
    sampling costs time): the share of wall time spent in the tracker list's
    modules (anywhere on the stack), and in any script at all. Unlike the busy
    share, this hardly moves when other work on the machine delays the page."""
    cdp.send("Profiler.enable")
    cdp.send("Profiler.setSamplingInterval", {"interval": 500})
    cdp.send("Profiler.start")
    started = time.monotonic()
    time.sleep(seconds)
    profile = cdp.send("Profiler.stop")["profile"]
    wall = time.monotonic() - started
    cdp.send("Profiler.disable")
    parents: dict[int, int] = {}
    nodes = {node["id"]: node for node in profile["nodes"]}
    for node in profile["nodes"]:
        for child in node.get("children", []):
            parents[child] = node["id"]

    def in_list(node_id: int) -> bool:
        while node_id in nodes:
            if LIST_MODULES.search(nodes[node_id]["callFrame"]["url"]):
                return True
            node_id = parents.get(node_id, -1)
        return False

    idle = {"(idle)", "(program)"}
    listed = busy = 0.0
    memo: dict[int, bool] = {}
    for node_id, delta in zip(profile["samples"], profile["timeDeltas"], strict=False):
        if nodes[node_id]["callFrame"]["functionName"] in idle:
            continue
        busy += delta
        if node_id not in memo:
            memo[node_id] = in_list(node_id)
        if memo[node_id]:
            listed += delta
    return {
        "seconds": round(wall, 1),
        "list_share": listed / 1e6 / wall,
        "script_share": busy / 1e6 / wall,
    }


def _type_searches(page: Page) -> list[dict[str, float]]:
    """Type each of QUERIES into the list's search box a key at a time (a short pause
    between keys, as a person types); the timings of every keystroke."""
    page.evaluate(KEYSTROKE_SCRIPT)
    search = page.locator(".tracker-search")
    rows = []
    for query in QUERIES:
        search.fill("")
        search.click()
        for key in query:
            page.keyboard.type(key)
            time.sleep(0.1)
            rows.append(page.evaluate("window.trackerMap.list().rowsInPage"))
    timings: list[dict[str, float]] = page.evaluate("window.__keystrokes")
    return [{**timing, "rows": count} for timing, count in zip(timings, rows, strict=False)]


def _check_updates(page: Page, samples: int) -> dict[str, Any]:
    """Snapshots about a second apart: trackers on the page and in view, and how they move.

    Between two snapshots ``gap`` seconds apart, a tracker reporting every
    second (±20%) has moved with a chance of about 0.96 for a 1 s gap, and its
    timestamp has advanced by ``gap`` seconds on average.
    """
    snapshots = [page.evaluate(SNAPSHOT_SCRIPT)]
    for _ in range(samples):
        time.sleep(1.0)
        snapshots.append(page.evaluate(SNAPSHOT_SCRIPT))
    moved, gaps, advance = [], [], []
    for before, after in itertools.pairwise(snapshots):
        gap = (after["at"] - before["at"]) / 1000
        steps = [
            (stamp - before["stamps"][tracker]) / 1000
            for tracker, stamp in after["stamps"].items()
            if tracker in before["stamps"]
        ]
        moved.append(sum(1 for step in steps if step > 0))
        gaps.append(gap)
        advance.append(sum(steps) / len(steps) / gap if steps else float("nan"))
    last = snapshots[-1]
    ages = [(last["at"] - stamp) / 1000 for stamp in last["stamps"].values()]
    return {
        "trackers_on_page": len(last["stamps"]),
        "in_view": last["inView"],
        "badge": last["badge"],
        "moved_between_snapshots": moved,
        "snapshot_gaps_s": gaps,
        # Seconds of tracker time per second of wall time: 1.0 when the page keeps up.
        "timestamp_advance_rate": common.median(advance),
        "position_age_median_s": common.median(ages),
        "position_age_p99_s": common.percentile(ages, 0.99),
    }


def _metrics(cdp: CDPSession) -> dict[str, float]:
    answer = cdp.send("Performance.getMetrics")
    values = {metric["name"]: float(metric["value"]) for metric in answer["metrics"]}
    return {name: values.get(name, float("nan")) for name in METRICS}


def _cores_busy(before: Any, after: Any) -> float:
    total = sum(after) - sum(before)
    idle = (after.idle + getattr(after, "iowait", 0.0)) - (
        before.idle + getattr(before, "iowait", 0.0)
    )
    return (total - idle) / total * (os.cpu_count() or 1) if total > 0 else float("nan")


def _chromium_pids() -> list[int]:
    """The browser process Playwright started (its renderer, GPU and utility processes are its children)."""
    pids = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            parent = process.parent()
            if "chrom" in process.name() and (parent is None or "chrom" not in parent.name()):
                pids.append(process.pid)
    return pids


def _server_lag(log: Path, since: float) -> dict[str, Any]:
    """consume_events' progress lines written during the window: rate and lag (now minus Ts)."""
    rates: list[float] = []
    medians: list[float] = []
    p99s: list[float] = []
    for line in log.read_text(errors="replace").splitlines():
        match = LAG_LINE.search(line)
        if not match:
            continue
        with contextlib.suppress(ValueError):
            stamp = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
            if stamp < since:
                continue
        rates.append(float(match[1]))
        medians.append(float(match[2]))
        p99s.append(float(match[3]))
    return {
        "ingest_events_per_second": common.median(rates),
        "ingest_lag_median_s": common.median(medians),
        "ingest_lag_p99_s": max(p99s, default=float("nan")),
    }


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _percent(value: float) -> str:
    return "n/a" if value != value else f"{value * 100:.1f}%"


def rows(figures: dict[str, Any]) -> list[common.Row]:
    name = "browser"
    main = figures["main_thread"]
    page = figures["page"]
    check = figures["check"]
    server = figures["server"]
    busy = main["busy_share"]
    verdict = (
        "meets" if busy < TARGET_SHARE else f"misses by {(busy - TARGET_SHARE) * 100:.1f} points"
    )
    by_slice = main["busy_share_by_slice"]
    moved = check["moved_between_snapshots"]
    others = figures["machine_cores_busy"] - figures["browser_cores"] - server["cores"]
    return [
        common.Row(
            name,
            f"main thread busy, {figures['trackers']:,} trackers in view, the list of"
            f" {figures['list']['trackers']:,} {'open' if figures['list']['open'] else 'closed'}"
            f" ({figures['mode']}, {figures['window_seconds']:.0f} s)",
            f"{_percent(busy)} ({verdict})",
            f"< {TARGET_SHARE:.0%}",
        ),
        common.Row(
            name,
            "main thread busy per slice, min-max",
            f"{_percent(min(by_slice))}-{_percent(max(by_slice))}",
        ),
        common.Row(
            name,
            "of which script / layout / style",
            f"{_percent(main['script_share'])} / {_percent(main['layout_share'])} / {_percent(main['style_share'])}",
        ),
        common.Row(name, "main thread CPU time share", _percent(main["cpu_share"])),
        common.Row(
            name,
            "location updates received",
            f"{common.number(page['updates_per_second'])}/s in {common.number(page['messages_per_second'])} messages/s",
            f"{figures['trackers']:,}/s",
        ),
        common.Row(
            name,
            "trackers on page / in view",
            f"{check['trackers_on_page']:,} / {check['in_view']:,}",
            f"{figures['trackers']:,}",
        ),
        common.Row(
            name,
            "trackers moved between snapshots ~1 s apart",
            ", ".join(
                f"{count:,} in {gap:.2f} s"
                for count, gap in zip(moved, check["snapshot_gaps_s"], strict=False)
            )
            + f"; timestamps advance {check['timestamp_advance_rate']:.2f} s/s",
            "nearly all; 1.00 s/s",
        ),
        common.Row(
            name,
            "position age on page, median / p99",
            f"{check['position_age_median_s']:.2f} s / {check['position_age_p99_s']:.2f} s",
        ),
        common.Row(name, "animation frames the page drew in", f"{page['frames_per_second']:.1f}/s"),
        common.Row(
            name,
            "long tasks (> 50 ms)",
            f"{page['long_tasks_per_minute']:.1f}/min, max {page['long_task_max_ms']:.0f} ms",
        ),
        common.Row(
            name,
            "ingest rate, lag (consume_events)",
            f"{common.number(server['ingest_events_per_second'])}/s, median {server['ingest_lag_median_s']:.2f} s",
        ),
        common.Row(
            name,
            "CPU cores: renderer / browser / servers / all processes",
            f"{main['renderer_process_cores']:.2f} / {figures['browser_cores']:.2f}"
            f" / {server['cores']:.2f} / {figures['machine_cores_busy']:.2f} of {figures['cpus']}",
        ),
        common.Row(
            name,
            "cores used by everything else (PostgreSQL, Redis, other work)",
            f"{others:.2f}"
            + (
                " (contended: the busy share above is inflated)" if others > CONTENDED_CORES else ""
            ),
        ),
        common.Row(
            name,
            f"tracker list: {figures['list']['trackers']:,} trackers,"
            f" {'open' if figures['list']['open'] else 'closed'} during the window above",
            f"listed {figures['list']['seconds_until_listed']:.1f} s after opening the page,"
            f" {figures['list']['rows_in_page']} rows in the page",
        ),
        common.Row(
            name,
            f"main thread in the list's code / in any script (sampled {figures['list']['profile']['seconds']:.0f} s after)",
            f"{_percent(figures['list']['profile']['list_share'])} / {_percent(figures['list']['profile']['script_share'])}",
        ),
        common.Row(
            name,
            f"list search, keystroke to filtered rows, median / p90 ({figures['list']['keystrokes']} keys)",
            f"{figures['list']['keystroke_handled_ms_median']:.1f} ms / {figures['list']['keystroke_handled_ms_p90']:.1f} ms",
        ),
        common.Row(
            name,
            "list search, keystroke to the next frame, median / p90",
            f"{figures['list']['keystroke_frame_ms_median']:.1f} ms / {figures['list']['keystroke_frame_ms_p90']:.1f} ms",
            "< 50 ms",
        ),
        common.Row(name, "page errors", str(len(page["errors"])), "0"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="a 20 s window (the default)")
    group.add_argument("--full", action="store_true", help="a 60 s window")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument(
        "--list-closed",
        action="store_true",
        help="measure the main thread with the tracker list closed (to compare)",
    )
    options = parser.parse_args()
    figures = run(quick=not options.full, list_open=not options.list_closed)
    if options.json:
        print(json.dumps(figures, indent=2))
    for row in rows(figures):
        print(f"{row.figure:<60} {row.value:<40} {row.target}")


if __name__ == "__main__":
    main()
