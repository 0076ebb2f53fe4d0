"""The browser playground in a real headless Chromium (Playwright), against a real server with tiny-wan-t2v.

The ``browser`` fixture (tests/conftest.py) skips on a developer machine without Playwright or a
Chromium binary, saying why (Debian: apt-get install chromium); in CI (``CI`` set; .ci/run installs
Chromium) it fails instead: CI never passes without running the browser tests.
"""

from __future__ import annotations

import os

import httpx2 as httpx


def test_page_and_assets_are_served_locally(server):
    for path, kind in (("/", "text/html"), ("/playground", "text/html"), ("/playground/app.js", "javascript"),
                       ("/playground/style.css", "text/css")):
        response = httpx.get(server.base + path, timeout=10)
        assert response.status_code == 200 and kind in response.headers["content-type"], path
    page = httpx.get(server.base + "/", timeout=10).text
    assert "http://" not in page and "https://" not in page  # no CDN: everything comes from this server
    info = httpx.get(server.base + "/playground/info", timeout=10).json()
    assert info["kind"] == "video" and info["model"] == "tiny-wan-t2v" and info["defaults"]["num_frames"] == 9


def test_generate_a_video_in_the_browser(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(server.base + "/")
    page.wait_for_function("document.getElementById('model-line').textContent.includes('tiny-wan-t2v')")
    page.get_by_label("Prompt", exact=True).fill("a red fox in the browser")
    page.get_by_label("Steps").fill("2")
    page.get_by_label("Seed").fill("11")
    page.get_by_label("Seed").press("Enter")  # keyboard only: Enter in a field submits the form
    page.wait_for_selector("#output video", timeout=120_000)
    duration = page.wait_for_function(
        "() => { const v = document.querySelector('#output video');"
        " return v && v.readyState >= 1 && v.duration > 0 ? v.duration : null; }", timeout=30_000).json_value()
    assert abs(duration - 9 / 8) < 0.2  # 9 frames at the tiny model's 8 fps
    assert page.get_by_role("status").text_content().startswith("Done")
    page.wait_for_function("[...document.querySelectorAll('#history li')].some(li => "
                           "li.textContent.includes('a red fox in the browser') && li.textContent.includes('completed'))")
    page.screenshot(path=str(tmp_path / "playground-1280.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(tmp_path / "playground-390.png"), full_page=True)
    if os.environ.get("SGLD_SCREENSHOT_DIR"):  # how docs/playground.png was made
        page.set_viewport_size({"width": 1280, "height": 800})
        page.screenshot(path=os.path.join(os.environ["SGLD_SCREENSHOT_DIR"], "playground.png"))
    page.close()


def test_api_errors_are_shown(server, browser):
    page = browser.new_page()
    page.goto(server.base + "/playground")
    page.wait_for_function("document.getElementById('model-line').textContent.includes('tiny-wan-t2v')")
    page.get_by_label("Prompt", exact=True).fill("a cat")
    page.get_by_label("Frames").fill("10")  # not 4k+1: the API says why
    page.get_by_role("button", name="Generate").click()
    alert = page.get_by_role("alert")
    alert.wait_for(state="visible", timeout=30_000)
    assert "num_frames=10 must be 4k+1" in alert.text_content()
    page.close()
