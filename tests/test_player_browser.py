"""The mixer page in a real browser: Debian's chromium driven by Playwright (no browser download).

Skipped only when Playwright or chromium is absent (``.ci/run`` installs both). Screenshots go to pytest's
temporary folder, for review; they are not kept.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from stemsplit.player import PlayerServer
from test_player import SR, serving, write_track

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]
STEMS = ("drums", "bass", "other", "vocals")
expect = playwright_api.expect


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def track(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path / "Practice Song"
    return folder, write_track(folder, seconds=3.0, seed=5)


@pytest.fixture
def server(track: tuple[Path, dict[str, np.ndarray]]) -> Iterator[PlayerServer]:
    with serving(track[0]) as player:
        yield player


@pytest.fixture
def page(browser: Any, server: PlayerServer) -> Iterator[Any]:
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server.url)
    page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    yield page
    context.close()
    assert errors == []


def slider(page: Any, name: str) -> Any:
    return page.get_by_role("slider", name=name, exact=True)


def wait_for_position(page: Any, ok: Any, timeout_s: float = 30.0) -> None:
    """Poll the Position slider until ``ok(value)`` (the page's CSP forbids Playwright's eval'd predicates)."""
    deadline = time.monotonic() + timeout_s
    while not ok(float(slider(page, "Position").input_value())):
        assert time.monotonic() < deadline, slider(page, "Position").input_value()
        page.wait_for_timeout(100)


def download_mix(page: Any, folder: Path) -> tuple[np.ndarray, int, str]:
    button = page.get_by_role("button", name=re.compile(r"^Download mix"))
    label = button.inner_text()
    with page.expect_download(timeout=60_000) as info:
        button.click()
    path = folder / "mix.wav"
    info.value.save_as(path)
    data, rate = sf.read(path)
    return data, rate, label


def test_the_page_lists_the_stems_and_names_every_control(page: Any, tmp_path: Path) -> None:
    assert page.url.endswith("/")  # the token left the address bar
    for name in STEMS:
        assert page.locator(".stem .label", has_text=name).count() == 1
        volume = slider(page, f"{name} volume")
        assert (volume.get_attribute("min"), volume.get_attribute("max"), volume.input_value()) == (
            "0",
            "150",
            "100",
        )
        for kind in ("Mute", "Solo"):
            button = page.get_by_role("button", name=f"{kind} {name}", exact=True)
            assert button.get_attribute("aria-pressed") == "false"
    mute = page.get_by_role("button", name="Mute drums", exact=True)
    mute.click()
    assert mute.get_attribute("aria-pressed") == "true"
    mute.click()
    assert mute.get_attribute("aria-pressed") == "false"
    assert page.get_by_role("button", name="Play", exact=True).is_enabled()
    assert slider(page, "Position").input_value() == "0"
    assert (slider(page, "Speed").input_value(), slider(page, "Speed").get_attribute("min")) == ("100", "50")
    assert (slider(page, "Key").input_value(), slider(page, "Key").get_attribute("max")) == ("0", "6")
    for name in ("Set loop start", "Set loop end", "Clear loop"):
        assert page.get_by_role("button", name=name, exact=True).count() == 1
    assert page.get_by_role("button", name="Download mix (whole track)").count() == 1
    page.wait_for_timeout(500)  # the overviews
    page.screenshot(path=str(tmp_path / "player.png"))


def test_play_advances_the_position_and_pause_stops_it(page: Any) -> None:
    slider(page, "Speed").fill("80")
    slider(page, "Key").fill("-3")
    page.get_by_role("button", name="Play", exact=True).click()
    expect(page.get_by_role("button", name="Pause", exact=True)).to_be_visible()
    wait_for_position(page, lambda t: t > 0.3)
    page.get_by_role("button", name="Pause", exact=True).click()
    stopped = float(slider(page, "Position").input_value())
    page.wait_for_timeout(600)
    assert float(slider(page, "Position").input_value()) == pytest.approx(stopped, abs=0.05)
    expect(page.get_by_role("button", name="Play", exact=True)).to_be_visible()


AT_48K = """
const Native = window.AudioContext;
window.AudioContext = class extends Native {
  constructor(options) { super({ ...options, sampleRate: 48000 }); }
};
"""
"""An output device at 48 kHz (most computers' default), whatever rate headless Chromium picks."""


def test_a_48_khz_device_gets_its_parts_at_48_khz_and_plays(
    browser: Any, server: PlayerServer, tmp_path: Path
) -> None:
    """The page asks the server for every part at the device's rate (the track is 44.1 kHz), plays through
    them, and Download mix still writes the track's own rate."""
    context = browser.new_context(accept_downloads=True)
    context.add_init_script(AT_48K)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    rates: list[str] = []
    page.on("request", lambda r: "/api/pcm" in r.url and rates.append(r.url.rsplit("rate=", 1)[-1]))
    page.goto(server.url)
    page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    expect(page.locator("#status")).to_contain_text("48000 Hz")
    page.get_by_role("button", name="Play", exact=True).click()
    wait_for_position(page, lambda t: t > 2.0)
    assert rates and set(rates) == {"48000"}
    data, rate, _ = download_mix(page, tmp_path)
    assert (rate, data.shape) == (SR, (3 * SR, 2))
    context.close()
    assert errors == []


def test_space_and_arrows_drive_the_transport(page: Any) -> None:
    page.locator("h1").click()  # focus off the controls
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "Number(document.querySelector('[aria-label=Position]').value) >= 2.9"
    )  # 5 s, capped
    page.keyboard.press("ArrowLeft")
    wait_for_position(page, lambda t: t == 0)
    page.keyboard.press(" ")
    expect(page.get_by_role("button", name="Pause", exact=True)).to_be_visible()
    page.keyboard.press(" ")
    expect(page.get_by_role("button", name="Play", exact=True)).to_be_visible()


def test_download_mix_equals_the_sum_of_the_stems(
    page: Any, track: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    data, rate, label = download_mix(page, tmp_path)
    assert label == "Download mix (whole track)"
    assert rate == SR and data.shape == (3 * SR, 2)
    assert np.abs(data - sum(track[1].values())).max() <= 2e-4


def test_mute_and_a_volume_of_50_act_in_download_mix(
    page: Any, track: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    stems = track[1]
    page.get_by_role("button", name="Mute bass", exact=True).click()
    slider(page, "vocals volume").fill("50")
    data, _, _ = download_mix(page, tmp_path)
    assert np.abs(data - (stems["drums"] + stems["other"] + 0.5 * stems["vocals"])).max() <= 2e-4
    page.get_by_role("button", name="Solo other", exact=True).click()
    data, _, _ = download_mix(page, tmp_path)
    assert np.abs(data - stems["other"]).max() <= 2e-4


def test_a_loop_is_downloaded_alone_and_says_so(
    page: Any, track: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    slider(page, "Position").fill("0.5")
    page.get_by_role("button", name="Set loop start", exact=True).click()
    slider(page, "Position").fill("2")
    page.get_by_role("button", name="Set loop end", exact=True).click()
    data, _, label = download_mix(page, tmp_path)
    assert label == "Download mix (loop 0:00.5–0:02.0)"
    assert np.abs(data - sum(track[1].values())[SR // 2 : 2 * SR]).max() <= 2e-4
    page.get_by_role("button", name="Clear loop", exact=True).click()
    assert page.get_by_role("button", name="Download mix (whole track)").count() == 1


def test_speed_and_key_reach_download_mix(page: Any, tmp_path: Path) -> None:
    slider(page, "Speed").fill("80")
    slider(page, "Key").fill("2")
    data, _, _ = download_mix(page, tmp_path)
    assert data.shape[0] == pytest.approx(3 * SR / 0.8, rel=0.01)


def test_the_page_answers_403_without_the_token(browser: Any, server: PlayerServer) -> None:
    context = browser.new_context()
    page = context.new_page()
    base = server.url.split("?")[0]
    assert page.goto(base).status == 403
    assert page.goto(base + "static/player.js").status == 403
    assert page.goto(server.url.replace("token=", "token=x")).status == 403
    context.close()


def test_dragging_on_a_waveform_or_l_sets_the_loop(page: Any) -> None:
    canvas = page.locator(".stem canvas").first
    box = canvas.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 0.25 * box["width"], y)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.75 * box["width"], y, steps=5)
    page.mouse.up()
    label = page.get_by_role("button", name=re.compile(r"^Download mix")).inner_text()
    start, end = (float(v) for v in re.findall(r"0:0(\d\.\d)", label))
    assert label.startswith("Download mix (loop") and start == pytest.approx(0.75, abs=0.1)
    assert end == pytest.approx(2.25, abs=0.1)
    page.locator("h1").click()
    page.keyboard.press("l")  # a loop is set: L clears it
    expect(page.get_by_role("button", name="Download mix (whole track)")).to_be_visible()
    page.keyboard.press("l")
    expect(page.locator("#loop-label")).to_have_text(re.compile(r"^Loop from"))
