"""Jobs survive kill -9; the API key is enforced; a full queue answers 429."""

from __future__ import annotations

import time

import httpx2 as httpx
import pytest
from openai import AuthenticationError, OpenAI, RateLimitError

from tests.server.conftest import ServerProcess, wait_for


def test_kill_9_loses_no_job(tmp_path, tiny_wan_folder):
    srv = ServerProcess(tmp_path / "out")
    srv.start()
    client = OpenAI(api_key="x", base_url=srv.url, max_retries=0)
    long = dict(size="64x64", extra_body={"num_frames": 9, "num_inference_steps": 200})
    ids = [client.videos.create(prompt=f"job {i}", **long).id for i in range(3)]
    end = time.time() + 30
    while client.videos.retrieve(ids[0]).status != "in_progress" and time.time() < end:
        time.sleep(0.05)
    srv.kill()
    restart = ServerProcess(tmp_path / "out")
    ready = restart.start()
    try:
        client = OpenAI(api_key="x", base_url=restart.url, max_retries=0)
        listed = {v.id for v in client.videos.list(limit=100).data}
        assert set(ids) <= listed
        finals = [wait_for(client, vid, timeout=120) for vid in ids]
        assert [v.status for v in finals] == ["completed"] * 3
    finally:
        restart.stop()
    assert ready < 60


def test_api_key_and_queue_bound(tmp_path, tiny_wan_folder):
    srv = ServerProcess(tmp_path / "out", "--api-key", "s3cret", "--max-queue", "1")
    srv.start()
    try:
        assert httpx.get(srv.base + "/health").status_code == 200  # no key needed
        r = httpx.get(srv.url + "/videos")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(srv.url + "/videos", headers={"Authorization": "Bearer wrong"}).status_code == 401
        with pytest.raises(AuthenticationError):
            OpenAI(api_key="wrong", base_url=srv.url, max_retries=0).videos.list()
        client = OpenAI(api_key="s3cret", base_url=srv.url, max_retries=0)
        long = dict(size="64x64", extra_body={"num_frames": 9, "num_inference_steps": 200})
        first = client.videos.create(prompt="runs", **long)
        end = time.time() + 30
        while client.videos.retrieve(first.id).status != "in_progress" and time.time() < end:
            time.sleep(0.05)
        second = client.videos.create(prompt="waits", **long)
        with pytest.raises(RateLimitError) as info:
            client.videos.create(prompt="refused", **long)
        assert info.value.response.headers["Retry-After"]
        assert {v.id for v in client.videos.list().data} == {first.id, second.id}
        for vid in (first.id, second.id):
            client.videos.delete(vid)
    finally:
        srv.stop()
