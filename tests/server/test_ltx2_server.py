"""A server with sound: /v1/videos on tiny-ltx2 answers MP4s with H.264 and AAC, says so in its video objects,
maps ``seconds`` through LTX-2's 8k+1 frames, takes the sound's guidance and the two-stage recipe per request,
and the playground plays the video with its sound track."""

from __future__ import annotations


import httpx2 as httpx
import pytest

from tests.conftest import read_streams
from tests.server.conftest import ServerProcess, wait_for

FPS = 24


@pytest.fixture(scope="module")
def ltx2_server(tmp_path_factory, sgld_home):
    srv = ServerProcess(tmp_path_factory.mktemp("ltx2-server") / "out", "--num-inference-steps", "2",
                        model="tiny-ltx2")
    srv.start(timeout=240)
    yield srv
    srv.stop()


def test_videos_have_sound_and_say_so(ltx2_server):
    client = ltx2_server.openai()
    # 0.5 s at 24 fps is 12 frames; LTX-2 takes 8k+1: the nearest, 9 frames (0.375 s).
    video = client.videos.create(prompt="a red fox barks in the snow", seconds="0.5")
    done = wait_for(client, video.id, timeout=120)
    assert done.status == "completed", done.error
    body = httpx.get(f"{ltx2_server.url}/videos/{video.id}", timeout=10).json()
    assert body["seconds"] == "0.375" and body["has_audio"] is True and body["audio_sample_rate"] == 24000
    content = httpx.get(f"{ltx2_server.url}/videos/{video.id}/content", timeout=30)
    assert content.status_code == 200 and content.headers["content-type"] == "video/mp4"
    found = read_streams(content.content)
    assert found["video"]["frames"] == 9
    assert found["audio"]["codec"] == "aac" and found["audio"]["rate"] == 24000 and found["audio"]["channels"] == 2
    assert abs(found["audio"]["seconds"] - found["video"]["seconds"]) <= 1 / FPS
    listed = httpx.get(f"{ltx2_server.url}/videos", timeout=10).json()["data"]
    assert all(item["has_audio"] for item in listed)


def test_the_sound_guidance_and_two_stage_are_request_fields(ltx2_server):
    response = httpx.post(f"{ltx2_server.url}/videos", timeout=30, json={
        "prompt": "rain on a tin roof", "audio_guidance_scale": 2.0, "two_stage": True, "size": "128x128"})
    assert response.status_code == 200, response.text
    done = wait_for(ltx2_server.openai(), response.json()["id"], timeout=120)
    assert done.status == "completed", done.error
    # Two-stage sizes are multiples of 64 (stage 1 runs at half): refused before queueing, naming the field.
    bad = httpx.post(f"{ltx2_server.url}/videos", timeout=30, json={"prompt": "x", "two_stage": True, "size": "96x96"})
    assert bad.status_code == 400 and "multiple of 64" in bad.json()["error"]["message"]


def test_prompt_enhancement_is_refused_with_a_message(ltx2_server):
    response = httpx.post(f"{ltx2_server.url}/videos", timeout=30, json={"prompt": "x", "enhance_prompt": True})
    assert response.status_code == 400 and "prompt enhancement" in response.json()["error"]["message"]


def test_the_playground_plays_the_video_with_its_sound(ltx2_server, browser):
    page = browser.new_page()
    page.goto(ltx2_server.base + "/")
    page.wait_for_function("document.getElementById('model-line').textContent.includes('tiny-ltx2')")
    page.get_by_label("Prompt", exact=True).fill("a fox barks in the browser")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector("#output video", timeout=120_000)
    page.wait_for_function("() => { const v = document.querySelector('#output video');"
                           " return v && v.readyState >= 1 && v.duration > 0; }", timeout=30_000)
    assert not page.evaluate("document.querySelector('#output video').muted")
    # The element's source, as the page fetched it, has an AAC track the length of the video.
    data = page.evaluate("async () => { const r = await fetch(document.querySelector('#output video').src);"
                         " return Array.from(new Uint8Array(await r.arrayBuffer())); }")
    found = read_streams(bytes(data))
    assert found["audio"]["codec"] == "aac" and abs(found["audio"]["seconds"] - found["video"]["seconds"]) <= 1 / FPS
    # Chromium decodes that track when the element plays (muted here: no audio device in the test).
    decoded = page.evaluate("""async () => {
        const v = document.querySelector('#output video');
        v.muted = true;
        await v.play();
        await new Promise(done => v.addEventListener('ended', done, {once: true}));
        return v.webkitAudioDecodedByteCount; }""")
    assert decoded > 0  # measured: 4758 bytes for the tiny model's 0.375 s
    page.close()
