"""What SGLang's and OpenAI's clients expect of the server: model retrieval, SGLang's model keys, x-request-id."""

from __future__ import annotations

import httpx2 as httpx
import openai
import pytest

from tests.server.conftest import wait_for
from tests.support.faults import JOB_FAULT

# SGLang's registry's task types (tests/test_sglang_suite.py holds every family to it).
TASK_TYPES = {"tiny-wan-t2v": "T2V", "tiny-wan21-i2v": "I2V", "tiny-wan22-ti2v": "TI2V", "tiny-qwen-image": "T2I",
              "tiny-flux": "T2I", "tiny-qwen-image-edit": "I2I", "tiny-qwen-image-edit-plus": "I2I",
              "tiny-flux2-klein": "TI2I"}


def test_models_list_and_retrieve_with_the_openai_sdk(client, server):
    listed = client.models.list().data
    assert [m.id for m in listed] == ["tiny-wan-t2v"]
    model = client.models.retrieve("tiny-wan-t2v")
    assert model.id == "tiny-wan-t2v" and model.object == "model" and model.owned_by == "sgld"
    extra = model.model_extra
    assert extra == {"root": "tiny-wan-t2v", "task_type": "T2V", "supported_task_types": ["T2V"], "num_gpus": 1,
                     "dit_precision": "fp32", "vae_precision": "fp32", "pipeline_name": "WanPipeline",
                     "pipeline_class": "WanPipeline"}
    assert client.models.retrieve("tiny_wan").id == "tiny-wan-t2v"  # the config name works too
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("nope")
    assert missing.value.body["code"] == "model_not_found" and "nope" in missing.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("acme/other-model")  # ids with a slash reach the route too


@pytest.mark.parametrize("model_path", sorted(TASK_TYPES))
def test_model_objects_carry_sglangs_keys_from_the_family_and_the_run(model_path, tmp_path, sgld_home):
    from sgld.run_config import run_config_from_options
    from server import create_app

    run = run_config_from_options({"model_path": model_path, "output_path": str(tmp_path), "vae_precision": "bf16"})
    app = create_app(run, start=False)  # the listing needs the model's folder, not its weights
    body = app.test_client().get("/v1/models").get_json()["data"][0]
    assert body["task_type"] == TASK_TYPES[model_path] and body["root"] == model_path
    assert body["supported_task_types"] == [TASK_TYPES[model_path]]
    assert (body["num_gpus"], body["dit_precision"], body["vae_precision"]) == (1, run.model.precision, "bf16")


def test_every_response_carries_a_request_id(server):
    sent = httpx.get(server.url + "/models", headers={"X-Request-Id": "client-id-42"}, timeout=10)
    assert sent.headers["x-request-id"] == "client-id-42"
    fresh = httpx.get(server.url + "/models", timeout=10).headers["x-request-id"]
    again = httpx.get(server.url + "/models", timeout=10).headers["x-request-id"]
    assert fresh.startswith("req_") and fresh != again
    error = httpx.get(server.url + "/videos/nope", headers={"X-Request-Id": "err-1"}, timeout=10)
    assert error.status_code == 404 and error.headers["x-request-id"] == "err-1"
    unusable = httpx.get(server.url + "/models", headers={"X-Request-Id": "bad id with spaces"}, timeout=10)
    assert unusable.headers["x-request-id"].startswith("req_")  # replaced, not echoed
    log = server.log.read_text(errors="replace")
    assert "GET /v1/models 200 request_id=client-id-42" in log and "GET /v1/videos/nope 404 request_id=err-1" in log


def test_a_failed_jobs_error_names_its_request_id(tmp_path_factory, tiny_wan_folder):
    from tests.server.conftest import ServerProcess

    srv = ServerProcess(tmp_path_factory.mktemp("faults") / "out", model="tiny_wan", faults=True)
    srv.start()
    try:
        client = srv.openai()
        video = client.videos.create(prompt=f"boom {JOB_FAULT}", size="64x64", extra_body={"num_inference_steps": 1},
                                     extra_headers={"X-Request-Id": "job-req-7"})
        video = wait_for(client, video.id)
        assert video.status == "failed" and "request_id=job-req-7" in video.error.message
        assert "request_id=job-req-7" in srv.log.read_text(errors="replace")
    finally:
        srv.stop()


def test_a_job_store_from_before_request_ids_opens_and_keeps_its_jobs(tmp_path):
    """The first release's SQLite store (no request ids, no migrations) is stamped and upgraded in place."""
    import sqlite3

    from server.store import JobStore, store_url

    first_release = """CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
        progress INTEGER NOT NULL DEFAULT 0, model TEXT NOT NULL, prompt TEXT NOT NULL, options TEXT NOT NULL,
        size TEXT NOT NULL, seconds TEXT, created_at INTEGER NOT NULL, started_at INTEGER, completed_at INTEGER,
        error_code TEXT, error_message TEXT, outputs TEXT NOT NULL DEFAULT '[]', attempts INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX jobs_status ON jobs(status);"""
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as conn:
        conn.executescript(first_release)
        conn.execute("INSERT INTO jobs (id, kind, status, model, prompt, options, size, created_at) "
                     "VALUES ('video_1', 'video', 'queued', 'm', 'a fox', '{}', '64x64', 1)")
    store = JobStore(store_url(None, tmp_path))
    job = store.get("video_1")
    assert job.prompt == "a fox" and job.request_id is None and job.worker is None
    store.update("video_1", request_id="r-1")
    assert store.get("video_1").request_id == "r-1"
    assert store.claim("m", "replica-1", 60).id == "video_1"  # the upgraded store is a queue too