"""/v1/videos through the real openai SDK against a real Waitress server with tiny-wan-t2v."""

from __future__ import annotations

import time

import httpx2 as httpx
import numpy as np

from tests.conftest import read_mp4
from tests.server.conftest import wait_for


def test_create_poll_download(client, server, tmp_path):
    video = client.videos.create_and_poll(
        prompt="a calico cat playing a piano on stage", size="64x48", seconds="1",
        extra_body={"seed": 5, "num_inference_steps": 3}, poll_interval_ms=100,
    )
    assert video.status == "completed" and video.progress == 100 and video.error is None
    assert video.size == "64x48" and video.seconds == "1.125"  # 1 s at 8 fps -> 9 frames (4k+1)
    assert video.completed_at >= video.created_at and video.object == "video" and video.model == "tiny-wan-t2v"
    content = client.videos.download_content(video_id=video.id)
    path = tmp_path / "out.mp4"
    path.write_bytes(content.read())
    meta, frames = read_mp4(path)
    assert meta["size"] == (64, 48) and len(frames) == 9 and meta["codec"] == "h264"
    thumb = client.videos.download_content(video_id=video.id, variant="thumbnail").read()
    assert thumb[:4] == b"RIFF" and thumb[8:12] == b"WEBP"


def test_json_body_as_in_curl(server):
    r = httpx.post(server.url + "/videos", json={"prompt": "a red fox", "size": "64x64", "num_frames": 5, "num_inference_steps": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] in ("queued", "in_progress") and body["seconds"] == "0.625" and body["size"] == "64x64"
    assert r.headers["openai-poll-after-ms"]


def test_progress_is_real(client, server):
    video = client.videos.create(prompt="a slow fox", size="64x64", extra_body={"num_frames": 9, "num_inference_steps": 60})
    seen = set()
    end = time.time() + 60
    while time.time() < end:
        v = client.videos.retrieve(video.id)
        seen.add(v.progress)
        if v.status == "completed":
            break
        time.sleep(0.02)
    assert v.status == "completed"
    assert any(0 < p < 100 for p in seen), seen  # intermediate values from the denoise loop
    assert v.progress == 100


def test_list_pagination(client):
    ids = [client.videos.create(prompt=f"clip {i}", size="64x64", extra_body={"num_frames": 1, "num_inference_steps": 1}).id for i in range(3)]
    for vid in ids:
        wait_for(client, vid)
    page = client.videos.list(limit=2, order="asc", extra_query={})
    everything = [v.id for v in client.videos.list(limit=100, order="asc").data]
    assert [v.id for v in page.data] == everything[:2] and page.has_more
    rest = client.videos.list(limit=100, order="asc", after=page.data[-1].id)
    assert [v.id for v in rest.data] == everything[2:]
    newest = client.videos.list(limit=3).data
    assert [v.id for v in newest] == list(reversed(everything))[:3]
    assert set(ids) <= set(everything)


def test_delete_queued_and_running(client, server):
    long = dict(size="64x64", extra_body={"num_frames": 9, "num_inference_steps": 150})
    running = client.videos.create(prompt="long one", **long)
    queued = client.videos.create(prompt="waiting one", **long)
    end = time.time() + 30
    while client.videos.retrieve(running.id).status != "in_progress" and time.time() < end:
        time.sleep(0.05)
    assert client.videos.delete(queued.id).deleted
    assert client.videos.delete(running.id).deleted
    for vid in (queued.id, running.id):
        r = httpx.get(f"{server.url}/videos/{vid}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "video_not_found"
    time.sleep(0.5)
    assert not list((server.output_dir / "files").glob(f"{running.id}*"))
    # The worker is free again.
    done = client.videos.create_and_poll(prompt="after cancel", size="64x64", extra_body={"num_frames": 1, "num_inference_steps": 1}, poll_interval_ms=100)
    assert done.status == "completed"


def test_content_before_completion_is_409(client, server):
    video = client.videos.create(prompt="not yet", size="64x64", extra_body={"num_frames": 9, "num_inference_steps": 100})
    r = httpx.get(f"{server.url}/videos/{video.id}/content")
    assert r.status_code == 409 and r.json()["error"]["code"] == "video_not_ready"
    client.videos.delete(video.id)


def test_models_health_metrics_openapi(server):
    models = httpx.get(server.url + "/models").json()
    assert models["data"][0]["id"] == "tiny-wan-t2v"
    assert httpx.get(server.base + "/health").json()["status"] == "ok"
    metrics = httpx.get(server.base + "/metrics").text
    assert "sgld_queue_depth" in metrics and "sgld_denoise_steps_total" in metrics and "sgld_http_requests_total" in metrics
    assert "calico" not in metrics  # no prompts in metrics
    spec = httpx.get(server.base + "/openapi.json").json()
    assert spec["openapi"].startswith("3.") and "/v1/videos/{video_id}/content" in spec["paths"]


def test_sglangs_video_fields_and_object(client, server, tmp_path):
    """n outputs with a seed each (content ?variant=N), size "" (the model's default), flow_shift and the output
    quality act; quality is accepted and named back; the object carries SGLang's url, num_outputs and timing, and
    echoes the requested model name."""

    common = {"num_inference_steps": 2, "num_frames": 5, "flow_shift": 8.0, "output_compression": 100,
              "x264_preset": "ultrafast"}
    raw = client.videos.with_raw_response.create(prompt="a red fox", model="sora-2", size="",
                                                 extra_body={**common, "n": 2, "seed": [5, 6], "quality": "exact"})
    assert raw.headers["x-sgld-ignored-fields"] == "quality"
    for field, value in (("generator_device", {"a": 1}), ("max_sequence_length", 0), ("profile", "sometimes")):
        refused = httpx.post(server.url + "/videos", json={"prompt": "x", field: value}, timeout=10)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == field  # ignored, still typed
    video = wait_for(client, raw.parse().id)
    assert video.status == "completed" and video.model == "sora-2" and video.size == "64x64"
    extra = video.model_extra
    assert extra["num_outputs"] == 2 and extra["inference_time_s"] > 0 and extra["quality"] == "standard"
    assert extra["url"] == f"/v1/videos/{video.id}/content?variant=0" and len(extra["urls"]) == 2

    def frames(video_id, variant):
        path = tmp_path / f"{video_id}_{variant}.mp4"
        path.write_bytes(httpx.get(f"{server.url}/videos/{video_id}/content", params={"variant": variant}).content)
        return np.stack(read_mp4(path)[1]).astype(int)

    second = frames(video.id, "1")
    alone = wait_for(client, client.videos.create(prompt="a red fox", size="64x64",
                                                  extra_body={**common, "seed": 6}).id)
    assert np.abs(second - frames(alone.id, "video")).max() <= 2  # output 1 is seed 6's video
    assert np.abs(second - frames(video.id, "0")).max() > 10
    unshifted = wait_for(client, client.videos.create(prompt="a red fox", size="64x64", extra_body={
        **{k: v for k, v in common.items() if k != "flow_shift"}, "seed": 6}).id)
    assert np.abs(second - frames(unshifted.id, "video")).max() > 10  # flow_shift changed the schedule
    assert httpx.get(f"{server.url}/videos/{video.id}/content", params={"variant": "2"}).status_code == 400


def test_sglangs_refusals_on_videos(server):
    post = lambda **body: httpx.post(server.url + "/videos", json={"prompt": "a fox", **body})  # noqa: E731
    r = post(input_reference="dummy", size="64x64")  # SGLang's check of a T2V model
    assert r.status_code == 400 and "input_reference is not supported" in r.json()["detail"]
    # Finishing acts (tests/test_finishing.py); its weights are the server's, not a request's to name.
    for field, value in (("upscaling_model_path", "org/esrgan"), ("frame_interpolation_model_path", "/tmp/rife"),
                         ("video_url", "https://x/y")):
        r = post(**{field: value})
        assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_feature", r.text
    assert "path on the server" in post(output_path="/tmp/elsewhere").json()["detail"]
    form = httpx.post(server.url + "/videos", data={"prompt": "a fox", "size": "64x64",
                                                    "extra_params": '{"num_frames": 1, "num_inference_steps": 1}'})
    assert form.status_code == 200 and form.json()["seconds"] == "0.125", form.text  # extra_params flattened
