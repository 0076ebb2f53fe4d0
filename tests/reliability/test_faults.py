"""Faults: kill -9 with jobs running and queued, an engine exception, an unwritable output directory,
concurrent readers of the SQLite store. Nothing accepted is lost; every failure says why."""

from __future__ import annotations

import sqlite3
import threading
import time


from tests.reliability.conftest import API_KEY, openai_client
from tests.server.conftest import ServerProcess, wait_for
from tests.support.faults import JOB_FAULT

SMALL = dict(size="64x64", extra_body={"num_frames": 1, "num_inference_steps": 1})


def test_kill_9_with_running_and_queued_jobs_loses_nothing(tmp_path, tiny_wan_folder):
    srv = ServerProcess(tmp_path / "out", env={"SGLD_API_KEY": API_KEY})
    srv.start()
    client = openai_client(srv)
    # The first job runs long enough to be killed mid-denoise; the others wait behind it.
    running = client.videos.create(prompt="job 0", size="64x64", extra_body={"num_frames": 5, "num_inference_steps": 60})
    queued = [client.videos.create(prompt=f"job {i}", **SMALL).id for i in (1, 2, 3)]
    end = time.time() + 30
    while client.videos.retrieve(running.id).progress < 5 and time.time() < end:
        time.sleep(0.05)
    assert client.videos.retrieve(running.id).status == "in_progress"
    assert {client.videos.retrieve(i).status for i in queued} == {"queued"}
    srv.kill()
    killed = time.perf_counter()
    restart = ServerProcess(tmp_path / "out", env={"SGLD_API_KEY": API_KEY})
    ready = restart.start()
    try:
        client = openai_client(restart)
        ids = [running.id, *queued]
        assert set(ids) <= {v.id for v in client.videos.list(limit=100).data}
        finals = [wait_for(client, vid, timeout=120) for vid in ids]
        recovered = time.perf_counter() - killed
        assert [v.status for v in finals] == ["completed"] * 4
        for video in finals:
            assert client.videos.download_content(video.id).read()[4:8] == b"ftyp"
    finally:
        restart.stop()
    print(f"\nkill -9: restart ready in {ready:.1f} s; all 4 accepted jobs completed {recovered:.1f} s after the kill")
    assert ready < 60


def test_engine_exception_fails_that_job_only(video_server):
    client = openai_client(video_server)
    bad = client.videos.create(prompt=f"boom {JOB_FAULT}", **SMALL)
    final = wait_for(client, bad.id)
    assert final.status == "failed" and final.error.code == "generation_failed"
    assert "injected test fault" in final.error.message
    ok = wait_for(client, client.videos.create(prompt="fine", **SMALL).id)
    assert ok.status == "completed"


def test_unwritable_output_dir_fails_the_job_with_a_clear_message(video_server):
    # Root ignores file modes, so the files directory is swapped for a plain file: writes into it fail for real.
    client = openai_client(video_server)
    files = video_server.output_dir / "files"
    aside = video_server.output_dir / "files.aside"
    files.rename(aside)
    files.write_text("not a directory")
    try:
        job = client.videos.create(prompt="cannot be saved", **SMALL)
        final = wait_for(client, job.id)
    finally:
        files.unlink()
        aside.rename(files)
    assert final.status == "failed" and final.error.code == "output_write_failed", final.error
    assert "could not write the output file in" in final.error.message and str(files) in final.error.message
    ok = wait_for(client, client.videos.create(prompt="saved again", **SMALL).id)
    assert ok.status == "completed"


def test_store_serves_concurrent_readers_while_jobs_run(video_server):
    client = openai_client(video_server)
    db = video_server.output_dir / "jobs.sqlite3"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ids = [client.videos.create(prompt=f"w{i}", **SMALL).id for i in range(4)]
    errors: list[BaseException] = []
    reads = [0]

    def reader():
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
            end = time.time() + 3
            while time.time() < end:
                conn.execute("SELECT id, status, progress FROM jobs").fetchall()
                reads[0] += 1
            conn.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert [wait_for(client, vid).status for vid in ids] == ["completed"] * 4
    print(f"\nsqlite: {reads[0]} reads from 4 threads while 4 jobs ran, 0 errors")
