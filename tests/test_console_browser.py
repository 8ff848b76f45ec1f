"""The web console in a real browser: Debian's Chromium driven by Selenium against a real
``nomarr serve`` on a scanned copy of the shared corpus.

Every page is opened, every control used once (search, filters, sort, paging, play — the audio
element's ``currentTime`` must advance —, playlists and their M3U download, a model pulled from a
local fixture server and verified, the guided import, the map's hover, click and area selection),
each page is photographed at 1280 px and at 390 px (``$NOMARR_SCREENSHOTS`` or the test's tmp
dir), and any console error or failed request fails the test. Skipped with the reason when
Chromium, its driver or Selenium is absent (``.ci/run`` installs them).
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests import fixture_models as fx
from tests.server_harness import RunningAgent, config, isolated_dirs
from tests.test_essentia_import import MOOD_HAPPY
from tests.test_registry import HEAD_MANIFEST

pytestmark = [pytest.mark.slow, pytest.mark.corpus]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # pragma: no cover - selenium is in [dev]
    webdriver = None  # type: ignore[assignment]

if webdriver is None or CHROMIUM is None or DRIVER is None:
    pytest.skip(
        "needs Chromium, chromedriver (Debian: apt-get install chromium chromium-driver) and "
        "selenium (pip install -e '.[dev]')",
        allow_module_level=True,
    )

WIDE = (1280, 900)
PHONE = (390, 844)


class _Files(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Files

    def log_message(self, *a: Any) -> None:
        pass

    def do_GET(self) -> None:
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory):
    srv = _Files(("127.0.0.1", 0), _Handler)
    srv.files = {}
    base = tmp_path_factory.mktemp("fixture-models")
    for name, seed in (("head.onnx", 1), ("mood_happy-msd-musicnn-1.onnx", 5)):
        fx.head(base / name, seed=seed)
        srv.files[f"/m/{name}"] = (base / name).read_bytes()
    srv.files["/m/LICENSE.txt"] = b"CC-BY-NC-SA-4.0 (fixture)\n"
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, corpus: Path, model_server: Any):
    base = tmp_path_factory.mktemp("console")
    with isolated_dirs(base):
        lib = base / "library"
        lib.mkdir()
        for p in sorted(corpus.glob("*.ogg")):
            shutil.copy(p, lib / p.name)
            os.chmod(lib / p.name, 0o644)
        port = model_server.server_address[1]
        manifests = base / "xdg_data_home" / "nomarr" / "manifests"
        manifests.mkdir(parents=True)
        data = model_server.files["/m/head.onnx"]
        import hashlib

        fx.write_manifest(
            manifests,
            HEAD_MANIFEST.format(
                url=f"http://127.0.0.1:{port}/m/head.onnx",
                sha=f'sha256 = "{hashlib.sha256(data).hexdigest()}"',
                size=len(data),
            ),
        )
        agent = RunningAgent(config([str(lib)], str(base / "nomarr.db"), workers=2)).start()
        try:
            agent.idle(900)
            yield agent, base
        finally:
            agent.stop()


@pytest.fixture(scope="module")
def browser(console: Any, tmp_path_factory: pytest.TempPathFactory):
    downloads = tmp_path_factory.mktemp("downloads")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
        f"--window-size={WIDE[0]},{WIDE[1]}",
        "--force-device-scale-factor=1",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    opts.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    drv = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=opts)
    drv.set_page_load_timeout(60)
    drv.downloads = downloads  # type: ignore[attr-defined]
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = os.environ.get("NOMARR_SCREENSHOTS")
    out = Path(d) if d else tmp_path_factory.mktemp("screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


# -- helpers ------------------------------------------------------------------------------------


def problems(drv: Any) -> list[str]:
    """Console errors and failed requests since the last call."""
    out = []
    for e in drv.get_log("browser"):
        if e.get("level") == "SEVERE":
            out.append(f"console: {e.get('message')}")
    for e in drv.get_log("performance"):
        msg = json.loads(e["message"])["message"]
        p = msg.get("params", {})
        if msg.get("method") == "Network.responseReceived":
            r = p.get("response", {})
            if r.get("status", 200) >= 400:
                out.append(f"HTTP {r.get('status')} {r.get('url')}")
        elif msg.get("method") == "Network.loadingFailed":
            if p.get("canceled") or p.get("errorText") == "net::ERR_ABORTED":
                continue  # a request the page itself aborted (a superseded search) or a navigation
            out.append(f"failed: {p.get('errorText')} {p.get('type')}")
    return out


def wait(drv: Any, cond: Any, timeout: float = 30) -> Any:
    try:
        return WebDriverWait(
            drv, timeout, ignored_exceptions=(StaleElementReferenceException,)
        ).until(cond)
    except TimeoutException:
        debug = Path(os.environ.get("NOMARR_SCREENSHOTS") or drv.downloads)
        drv.save_screenshot(str(debug / "timeout.png"))
        (debug / "timeout.html").write_text(drv.page_source)
        raise AssertionError(f"timed out at {drv.current_url}; problems: {problems(drv)}") from None


def css(drv: Any, sel: str, timeout: float = 30) -> Any:
    return wait(drv, EC.presence_of_element_located((By.CSS_SELECTOR, sel)), timeout)


def click(drv: Any, sel: str, timeout: float = 30) -> None:
    """Click once the element is clickable (again if a re-render replaced it meanwhile)."""
    for _ in range(5):
        el = wait(drv, EC.element_to_be_clickable((By.CSS_SELECTOR, sel)), timeout)
        try:
            drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
            el.click()
            return
        except StaleElementReferenceException:
            time.sleep(0.2)
    raise AssertionError(f"{sel} kept being replaced")


def text_in(drv: Any, sel: str, text: str, timeout: float = 30) -> None:
    wait(drv, EC.text_to_be_present_in_element((By.CSS_SELECTOR, sel), text), timeout)


def snap(drv: Any, shots: Path, name: str) -> None:
    """The page at desktop and phone width (full height), then back to desktop."""
    for w, h, tag in ((*WIDE, "desktop"), (*PHONE, "phone")):
        drv.set_window_size(w, h)
        time.sleep(0.6)
        full = drv.execute_script("return document.documentElement.scrollHeight")
        drv.set_window_size(w, min(max(h, full + 140), 4000))
        drv.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.4)
        if tag == "phone":
            overflow = drv.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 2, f"{name}: the page is {overflow} px wider than a 390 px phone"
        drv.save_screenshot(str(shots / f"{name}-{tag}.png"))
    drv.set_window_size(*WIDE)
    time.sleep(0.3)


def nav(drv: Any, agent: RunningAgent, path: str) -> None:
    drv.get(agent.url.replace("/api/v1", "") + path)


def label_with_high_tracks(agent: RunningAgent) -> str:
    """A label some but not all tracks have at tier high (so the tier filter shows something)."""
    _, moods = agent.request("GET", "/moods")
    best = ("", 0)
    for m in moods["items"]:
        _, page = agent.request("GET", f"/browse?label={m['label']}&tier=high&limit=1")
        if 0 < page["total"] < 20 and page["total"] > best[1]:
            best = (m["label"], page["total"])
    assert best[0], "no label has tracks at tier high"
    return best[0]


def audio_advances(drv: Any) -> float:
    def t(_: Any) -> float | bool:
        v = drv.execute_script("return document.getElementById('audio').currentTime")
        return v if v > 0.5 else False

    return float(wait(drv, t, 30))


# -- the tests (in order: they share one browser session) ---------------------------------------


def test_login(browser: Any, console: Any, shots: Path) -> None:
    agent, _ = console
    nav(browser, agent, "/library?q=island")
    wait(browser, EC.url_contains("/login"))
    css(browser, "#token").send_keys("not-the-token")
    click(browser, "#signin")
    text_in(browser, ".error", "not this agent's token")
    snap(browser, shots, "login")
    css(browser, "#token").send_keys(agent.token)
    click(browser, "#signin")
    wait(browser, EC.url_contains("/library?q=island"))  # back where the user was going
    cookie = next(c for c in browser.get_cookies() if c["name"].startswith("nomarr_session"))
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    problems_ = [p for p in problems(browser) if "401" not in p]
    assert not problems_, problems_


def test_overview(browser: Any, console: Any, shots: Path) -> None:
    agent, _ = console
    nav(browser, agent, "/")
    text_in(browser, "#stat-tracks", "20")
    text_in(browser, "#scan-card", "Idle")
    css(browser, "#recent li a")
    text_in(browser, "#models-card", "msd-musicnn-1")
    text_in(browser, "#models-card", "CPU")
    text_in(browser, "#libraries", "20 tracks")
    # the live scan: ask for one and see the pushed state change
    click(browser, "#scan-now")
    text_in(browser, "#toasts", "Scan queued")
    wait(
        browser,
        lambda d: (
            "Idle" in d.find_element(By.ID, "scan-state").text
            and "Last scan" in d.find_element(By.ID, "scan-card").text
        ),
        120,
    )
    snap(browser, shots, "overview")
    assert not problems(browser)


def test_library(browser: Any, console: Any, shots: Path) -> None:
    agent, _ = console
    nav(browser, agent, "/library")
    text_in(browser, "#count", "20 tracks")
    search = css(browser, "#search")
    search.send_keys("island")
    text_in(browser, "#count", "1 track matching")
    text_in(browser, "#tracks", "Island Dreams")
    search.clear()
    search.send_keys(" ")
    text_in(browser, "#count", "20 tracks")
    Select(css(browser, "#page-size")).select_by_value("10")
    text_in(browser, ".pager", "1–10 of 20")
    click(browser, "#next")
    text_in(browser, ".pager", "11–20 of 20")
    click(browser, "#prev")
    click(browser, 'button.sort[data-sort="title"]')
    wait(
        browser,
        lambda d: (
            d.find_element(By.CSS_SELECTOR, 'button.sort[data-sort="title"]').get_attribute(
                "aria-sort"
            )
            == "ascending"
        ),
    )
    titles = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#tracks td.title")]
    assert titles == sorted(titles, key=str.lower), titles
    lab = label_with_high_tracks(agent)
    Select(css(browser, "#label-filter")).select_by_value(lab)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'button.sort[data-sort="score"]'))
    scores = [
        float(e.text)
        for e in browser.find_elements(By.CSS_SELECTOR, "#tracks td .chip[class*=tier-]")
    ]
    assert scores == sorted(scores, reverse=True) and scores, scores
    Select(css(browser, "#tier-filter")).select_by_value("high")
    wait(browser, lambda d: "tier=high" in d.current_url)
    n_high = int(browser.find_element(By.ID, "count").text.split()[0])
    assert 0 < n_high < 20
    min_ = css(browser, "#min-score")
    min_.send_keys("0.5\t")
    wait(browser, lambda d: "min=0.5" in d.current_url)
    Select(css(browser, "#tier-filter")).select_by_value("")
    Select(css(browser, "#label-filter")).select_by_value("")
    Select(css(browser, "#status-filter")).select_by_value("failed")
    text_in(browser, "#count", "0 tracks")
    Select(css(browser, "#status-filter")).select_by_value("ok")
    Select(css(browser, "#page-size")).select_by_value("50")
    text_in(browser, "#count", "20 tracks")
    click(browser, "#tracks button[data-play]")
    audio_advances(browser)
    snap(browser, shots, "library")
    assert not problems(browser)


def test_track(browser: Any, console: Any, shots: Path) -> None:
    agent, _ = console
    nav(browser, agent, "/library?q=island")
    click(browser, "#tracks td.title a")
    text_in(browser, "#track-title", "Island Dreams")
    text_in(browser, "#scores", "provenance")
    assert "msd-musicnn-1" in css(browser, "#scores h3").get_attribute("textContent")
    css(browser, "#scores .chip[class*=tier-]")
    css(browser, "#similar li button[data-play]")
    text_in(browser, "#file-tags", "nom:onnx_musicnn_msd-1_msd50_1_")
    text_in(browser, "#wave-note", "click to play")
    click(browser, "#play-track")
    t = audio_advances(browser)
    # seeking by clicking the waveform's middle plays from there
    wave = css(browser, "#waveform")
    browser.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "arguments[0].dispatchEvent(new MouseEvent('click', {clientX: r.left + r.width * 0.5, clientY: r.top + 10, bubbles: true}))",
        wave,
    )
    wait(
        browser,
        lambda d: d.execute_script("return document.getElementById('audio').currentTime") > 40,
    )
    assert t > 0.5
    click(browser, "#similar li button[data-play]")
    audio_advances(browser)
    snap(browser, shots, "track")
    assert not problems(browser)


def test_playlists(browser: Any, console: Any, shots: Path) -> None:
    agent, _ = console
    nav(browser, agent, "/playlists")
    Select(css(browser, "#mood-label")).select_by_value("rock")
    click(browser, "#build")
    css(browser, "#playlist-result .tracklist li")
    click(browser, "#play-all")
    audio_advances(browser)
    click(browser, "#download-m3u")
    m3u = wait(browser, lambda d: next(iter(Path(d.downloads).glob("*.m3u")), False), 20)
    text = m3u.read_text()
    assert text.startswith("#EXTM3U") and text.count(".ogg") >= 2
    # seed radio and a path, picked through the search box
    click(browser, 'button[data-tab="radio"]')
    css(browser, ".picker input").send_keys("island")
    click(browser, ".picker-results button")
    click(browser, "#build")
    text_in(browser, "#playlist-result", "Radio: Island Dreams")
    click(browser, 'button[data-tab="path"]')
    pickers = browser.find_elements(By.CSS_SELECTOR, ".picker input")
    pickers[0].send_keys("island")
    click(browser, ".picker:nth-of-type(1) .picker-results button")
    wait(browser, lambda d: "Island" in d.find_element(By.ID, "path-chosen").text)
    pickers[1].send_keys("fridge")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".picker-results button")) >= 1)
    browser.find_elements(By.CSS_SELECTOR, ".picker-results button")[-1].click()
    click(browser, "#build")
    text_in(browser, "#playlist-result", " to ")
    css(browser, "#playlist-result .tracklist li")
    snap(browser, shots, "playlists")
    assert not problems(browser)


def test_models(browser: Any, console: Any, shots: Path, model_server: Any) -> None:
    agent, _ = console
    nav(browser, agent, "/models")
    css(browser, 'tr[data-model="fixture-head-1"]')
    click(browser, 'button[data-pull="fixture-head-1"]')
    text_in(browser, 'tr[data-model="fixture-head-1"]', "verified", 60)
    text_in(browser, 'tr[data-model="fixture-head-1"]', "yes")
    click(browser, 'button[data-verify="msd-musicnn-1"]')
    text_in(browser, 'tr[data-model="msd-musicnn-1"]', "verified")
    click(browser, 'tr[data-model="msd-musicnn-1"] td a')
    text_in(browser, "#stats-tracks", "20")
    css(browser, "#histogram div[title]")
    Select(css(browser, "#stats-label")).select_by_value("rock")
    text_in(browser, "#histogram", "Tier high")
    # guided import of an Essentia head for the built-in musicnn, from the fixture server
    port = model_server.server_address[1]
    meta = copy.deepcopy(MOOD_HAPPY)
    meta["name"] = "mood happy"
    meta["link"] = f"http://127.0.0.1:{port}/m/mood_happy-msd-musicnn-1.pb"
    meta["license"] = "CC BY-NC-SA 4.0"  # named here: no licence text to fetch from the internet
    meta["schema"]["inputs"][0]["shape"] = [200]
    meta["inference"]["embedding_model"] = {
        "algorithm": "TensorflowPredictMusiCNN",
        "model_name": "msd-musicnn-1",
    }
    import hashlib

    sha = hashlib.sha256(model_server.files["/m/mood_happy-msd-musicnn-1.onnx"]).hexdigest()
    browser.execute_script(
        "const t = document.getElementById('import-json'); t.value = arguments[0];",
        json.dumps(meta),
    )
    css(browser, "#import-sha").send_keys(sha)
    click(browser, "#import-preview")
    text_in(browser, "#import-licence", "CC")
    text_in(browser, "#import-id", "mood-happy-msd-musicnn-1")
    click(browser, "#import-accept")
    click(browser, "#import-go")
    text_in(browser, "#import-verified", "installed", 60)
    snap(browser, shots, "models")
    assert not problems(browser)


def test_map(browser: Any, console: Any, shots: Path) -> None:
    agent, _ = console
    nav(browser, agent, "/map")
    canvas = css(browser, "#map-canvas[data-points]")
    assert canvas.get_attribute("data-points") == "20"
    Select(css(browser, "#map-label")).select_by_value("rock")
    wait(browser, lambda d: "label=rock" in d.current_url)
    text_in(browser, "#map-info", "pca")
    # hover the first point, click it (plays), then drag over everything (a playlist)
    pts = browser.execute_script(
        "const c = document.getElementById('map-canvas'); const r = c.getBoundingClientRect();"
        "return [r.left, r.top, r.width, r.height];"
    )
    browser.execute_script(
        """const c = document.getElementById('map-canvas'); const [l, t, w, h] = arguments[0];
        const fire = (type, x, y) => c.dispatchEvent(new PointerEvent(type, {clientX: x, clientY: y, bubbles: true, pointerId: 1}));
        fire('pointerdown', l + 2, t + 2); fire('pointermove', l + w - 2, t + h - 2); fire('pointerup', l + w - 2, t + h - 2);""",
        pts,
    )
    text_in(browser, "#map-selection", "Map selection (20)")
    # hover a point: its track shows; click it: it plays
    x, y = (
        float(v) for v in css(browser, "#map-canvas").get_attribute("data-first-point").split(",")
    )
    browser.execute_script(
        """const c = document.getElementById('map-canvas'); const r = c.getBoundingClientRect();
        const [x, y] = arguments[0];
        const fire = (type) => c.dispatchEvent(new PointerEvent(type, {clientX: r.left + x, clientY: r.top + y, bubbles: true, pointerId: 1}));
        fire('pointermove');""",
        [x, y],
    )
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, ".map-tip").is_displayed())
    tip = browser.find_element(By.CSS_SELECTOR, ".map-tip strong").text
    browser.execute_script(
        """const c = document.getElementById('map-canvas'); const r = c.getBoundingClientRect();
        const [x, y] = arguments[0];
        const fire = (type) => c.dispatchEvent(new PointerEvent(type, {clientX: r.left + x, clientY: r.top + y, bubbles: true, pointerId: 1}));
        fire('pointerdown'); fire('pointerup');""",
        [x, y],
    )
    wait(browser, lambda d: d.find_element(By.ID, "now-title").text == tip)
    click(browser, "#map-play-all")
    audio_advances(browser)
    snap(browser, shots, "map")
    assert not problems(browser)


def test_sign_out(browser: Any, console: Any) -> None:
    agent, _ = console
    nav(browser, agent, "/")
    click(browser, "#logout")
    wait(browser, EC.url_contains("/login"))
    nav(browser, agent, "/models")
    wait(browser, EC.url_contains("/login?next="))
    assert not [p for p in problems(browser) if "401" not in p]
