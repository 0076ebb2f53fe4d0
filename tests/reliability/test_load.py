"""Bounded load: 200 concurrent creates against a queue bound of 8 on 127.0.0.1.

Exactly the accepted jobs complete, the rest get 429 with Retry-After, no id is duplicated or
lost, and the server's memory stays bounded. The test ends by itself within a fixed time.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx

from tests.reliability.conftest import AUTH

REQUESTS = 200
CLIENT_THREADS = 32
DEADLINE_S = 120


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_200_concurrent_creates(video_server):
    body = {"prompt": "load", "size": "64x64", "num_frames": 1, "num_inference_steps": 1}
    rss_before = rss_mib(video_server.proc.pid)
    started = time.perf_counter()
    with httpx.Client(base_url=video_server.url, headers=AUTH, timeout=30,
                      limits=httpx.Limits(max_connections=CLIENT_THREADS)) as client:

        def create(i: int) -> httpx.Response:
            return client.post("/videos", json={**body, "seed": i})

        with ThreadPoolExecutor(CLIENT_THREADS) as pool:
            responses = list(pool.map(create, range(REQUESTS)))
        burst_s = time.perf_counter() - started
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 429}, statuses
        refused = [r for r in responses if r.status_code == 429]
        assert all(r.headers.get("Retry-After") and r.json()["error"]["code"] == "queue_full" for r in refused)
        accepted = [r.json()["id"] for r in responses if r.status_code == 200]
        assert len(accepted) == len(set(accepted)) >= 8

        pending = set(accepted)
        finals: dict[str, str] = {}
        while pending and time.perf_counter() - started < DEADLINE_S:
            for vid in list(pending):
                status = client.get(f"/videos/{vid}").json()["status"]
                if status in ("completed", "failed"):
                    finals[vid] = status
                    pending.discard(vid)
            time.sleep(0.2)
        assert not pending, f"{len(pending)} accepted jobs did not finish in {DEADLINE_S} s"
        assert set(finals.values()) == {"completed"}

        listed = set()
        page = client.get("/videos", params={"limit": 100}).json()
        while True:
            listed |= {v["id"] for v in page["data"]}
            if not page["has_more"]:
                break
            page = client.get("/videos", params={"limit": 100, "after": page["last_id"]}).json()
        assert set(accepted) <= listed
        for vid in accepted:
            client.delete(f"/videos/{vid}")
    rss_after = rss_mib(video_server.proc.pid)
    print(f"\nload: {REQUESTS} creates in {burst_s:.2f} s: {len(accepted)} accepted (all completed), "
          f"{len(refused)} refused with 429, 0 lost; all done in {time.perf_counter() - started:.1f} s; "
          f"server RSS {rss_before:.0f} -> {rss_after:.0f} MiB")
    assert rss_after < rss_before + 300
