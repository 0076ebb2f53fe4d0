"""``serve --dp-size N``: N engine workers behind one HTTP front and one store; a dead worker fails only its job."""

from __future__ import annotations

import time

import httpx2 as httpx

from tests.server.conftest import ServerProcess, wait_for
from tests.support.faults import RANK_FAULT

# A few seconds each on a CI core: long enough for two to overlap.
LONG = dict(size="128x128", extra_body={"num_frames": 17, "num_inference_steps": 60, "seed": 2})
SMALL = dict(size="64x64", extra_body={"num_frames": 5, "num_inference_steps": 2, "seed": 1})


def test_two_engine_workers_run_two_jobs_at_once(tmp_path, tiny_wan_folder):
    # No batching: two same-size jobs queued within batch_wait_ms would otherwise share one worker's forward.
    srv = ServerProcess(tmp_path / "out", "--num-gpus", "2", "--dp-size", "2", "--max-batch-size", "1")
    try:
        srv.start()  # ready (200) once one engine has loaded: they load one after another
        end = time.time() + 60
        while time.time() < end:
            states = [w["status"] for w in httpx.get(srv.base + "/health", timeout=5).json()["workers"]]
            if states == ["ok", "ok"]:
                break
            assert set(states) <= {"ok", "loading"}, states
            time.sleep(0.2)
        assert states == ["ok", "ok"]
        client = srv.openai()
        ids = [client.videos.create(prompt=f"together {i}", **LONG).id for i in range(2)]
        finals = [wait_for(client, vid, timeout=120) for vid in ids]
        assert [v.status for v in finals] == ["completed", "completed"]
        import sqlalchemy as sa

        engine = sa.create_engine(f"sqlite:///{srv.output_dir / 'jobs.sqlite3'}")
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT started_at, completed_at, worker FROM jobs")).fetchall()
        engine.dispose()
        assert {row.worker.rsplit("#", 1)[1] for row in rows} == {"0", "1"}  # one job per worker
        assert max(row.started_at for row in rows) < min(row.completed_at for row in rows)  # they overlapped
    finally:
        srv.stop()


def test_a_dead_worker_fails_only_its_own_job(tmp_path, tiny_wan_folder):
    # Two workers of two gloo ranks each; a RANK_FAULT prompt kills rank 1 of whichever group runs it.
    srv = ServerProcess(tmp_path / "out", "parallel.num_gpus=4", "parallel.dp_size=2", "parallel.ulysses_degree=2",
                        model="tiny_wan", faults=True)
    try:
        srv.start(timeout=240)
        client = srv.openai()
        doomed = client.videos.create(prompt=f"a fox {RANK_FAULT}", **SMALL)
        failed = wait_for(client, doomed.id, timeout=120)
        assert failed.status == "failed" and "injected test failure on rank 1" in failed.error.message
        end = time.time() + 30
        while time.time() < end:
            health = httpx.get(srv.base + "/health", timeout=5)
            states = [w["status"] for w in health.json().get("workers", [])]
            if states.count("ok") == 1:
                break
            time.sleep(0.2)
        assert health.status_code == 200 and states.count("ok") == 1
        assert any("rank group failed" in state for state in states)  # the dead worker, named
        after = [client.videos.create(prompt=f"still served {i}", **SMALL).id for i in range(2)]
        assert [wait_for(client, vid, timeout=120).status for vid in after] == ["completed", "completed"]
    finally:
        srv.stop()
