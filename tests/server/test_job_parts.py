"""The job service's parts alone, on a real SQLite job store: the queue, batching and the replica's heartbeat.

No model and no HTTP server: each part is built the way ``JobService`` builds it, over a store
in ``tmp_path``, and driven the way the engine workers and the blueprints drive it.
"""

from __future__ import annotations

import threading
import time

import pytest

from sgld.config.schema import RunConfig, ServerConfig
from server.batching import Batching
from server.job_queue import JobCancelled, JobQueue, JobReleased, QueueFull, new_id
from server.outputs import OutputFiles
from server.replica import Replica
from server.store import Job, JobStore, now

MODEL = "tiny-wan-t2v"


@pytest.fixture
def store(tmp_path):
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    yield store
    store.engine.dispose()


@pytest.fixture
def outputs(tmp_path):
    return OutputFiles(str(tmp_path / "out"), tmp_path)


@pytest.fixture
def queue(store, outputs):
    return JobQueue(store, MODEL, ServerConfig(max_queue=4, lease_s=30), outputs)


def job(batch_key: str | None = None, n: int = 1) -> Job:
    """A validated image job as the blueprints hand it over."""
    return Job(id=new_id("image"), kind="image", status="queued", model=MODEL, prompt="a fox", options={"n": n},
               size="64x64", seconds=None, created_at=now(), batch_key=batch_key)


def in_thread(target, *args) -> tuple[threading.Thread, list]:
    """Run ``target(*args)`` in a thread; its result lands in the returned list."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(target(*args)), daemon=True)
    thread.start()
    return thread, result


# -- the queue -------------------------------------------------------------------------------------


def test_submit_claim_end_wakes_the_waiter(queue, store):
    submitted = queue.submit(job())
    assert queue.queued() == 1
    waiter, result = in_thread(queue.wait, submitted.id, 30)

    claimed = queue.next("replica#0")
    assert claimed.id == submitted.id and claimed.status == "in_progress" and claimed.worker == "replica#0"
    assert queue.running == [submitted.id] and queue.queued() == 0
    assert queue.next("replica#0") is None  # nothing else waits
    time.sleep(0.3)
    assert waiter.is_alive()  # still running: the waiter waits

    store.update(submitted.id, status="completed", progress=100)
    start = time.perf_counter()
    queue.end(submitted.id)
    waiter.join(5)
    assert time.perf_counter() - start < 0.5  # woken by the job's completion event, not by polling
    assert result[0].status == "completed" and queue.running == []


def test_a_full_queue_refuses_and_records_nothing(queue, store):
    for _ in range(queue.limits.max_queue):
        queue.submit(job())
    refused = job()
    with pytest.raises(QueueFull):
        queue.submit(refused)
    assert store.get(refused.id) is None and queue.queued() == queue.limits.max_queue


def test_delete_of_a_running_job_stops_it_and_removes_its_files(queue, store, outputs):
    running = queue.submit(job())
    queued = queue.submit(job())
    assert queue.claim("replica#0").id == running.id
    (outputs.local / f"{running.id}_0.png").write_bytes(b"partial")
    waiter, result = in_thread(queue.wait, running.id, 30)

    assert queue.delete(running.id)
    assert store.get(running.id) is None
    assert not list(outputs.local.glob(f"{running.id}*"))
    with pytest.raises(JobCancelled):  # the worker's next step stops it
        queue.interrupt(running.id)
    waiter.join(5)
    assert result == [None]  # the waiter hears the job is gone

    assert queue.delete(queued.id)  # a queued job: just removed; nothing of it runs
    queue.interrupt(queued.id)
    assert not queue.delete(queued.id)  # already gone

    queue.end(running.id)  # the worker settles it: the cancel flag goes with it
    queue.interrupt(running.id)
    assert queue.running == []


def test_a_draining_queue_claims_nothing(queue, store):
    waiting = queue.submit(job())
    queue.drain(timeout=5)  # nothing runs: returns at once
    assert queue.draining
    assert queue.claim("replica#0") is None and queue.next("replica#0") is None
    assert store.get(waiting.id).status == "queued"  # left for another replica


def test_drain_gives_a_running_job_back_after_its_timeout(queue, store):
    running = queue.submit(job())
    assert queue.claim("replica#0").id == running.id
    queue.interrupt(running.id)  # not draining yet: the job goes on
    drainer, _ = in_thread(queue.drain, 0.3)

    # The worker's step callback: it runs on until the drain's timeout asks for the job back.
    start = time.perf_counter()
    with pytest.raises(JobReleased):
        while time.perf_counter() - start < 10:
            queue.interrupt(running.id)
            time.sleep(0.02)
    assert time.perf_counter() - start >= 0.25
    assert drainer.is_alive()  # it waits for the job to be given back
    store.release(running.id, "replica#0")
    queue.end(running.id)
    drainer.join(5)
    assert not drainer.is_alive()
    released = store.get(running.id)
    assert released.status == "queued" and released.attempts == 0


def test_drain_waits_for_a_claim_under_way(queue, store, monkeypatch):
    """A claim that started before the drain lands in ``running`` and the drain waits for that job."""
    waiting = queue.submit(job())
    inside, go = threading.Event(), threading.Event()
    real_claim = store.claim

    def slow_claim(*args, **kwargs):
        inside.set()
        go.wait(10)
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(store, "claim", slow_claim)
    claimer, claimed = in_thread(queue.claim, "replica#0")
    assert inside.wait(5)
    drainer, _ = in_thread(queue.drain, 30)
    time.sleep(0.3)
    assert drainer.is_alive() and queue.draining
    go.set()
    claimer.join(5)
    assert claimed[0].id == waiting.id and queue.running == [waiting.id]
    time.sleep(0.3)
    assert drainer.is_alive()  # the claimed job is seen: the drain waits for it to finish
    store.update(waiting.id, status="completed")
    queue.end(waiting.id)
    drainer.join(5)
    assert not drainer.is_alive()


# -- batching --------------------------------------------------------------------------------------


class FourAtOnce:
    """What batching asks of an engine: how many samples one forward may hold."""

    def batch_limit(self) -> int:
        return 4


def test_gather_claims_jobs_of_the_same_key_up_to_the_limit(queue, store):
    first = queue.submit(job("size-a"))
    other_size = queue.submit(job("size-b"))
    same = queue.submit(job("size-a", n=2))
    too_many = queue.submit(job("size-a", n=2))  # 1 + 2 + 2 > 4: it waits for the next batch
    batching = Batching(ServerConfig(max_batch_size=8, batch_wait_ms=50), queue)

    claimed = queue.next("replica#0")
    assert claimed.id == first.id
    batch = batching.gather(claimed, "replica#0", FourAtOnce())
    assert [j.id for j in batch] == [first.id, same.id]
    assert sorted(queue.running) == sorted([first.id, same.id])
    assert store.get(too_many.id).status == "queued" and store.get(other_size.id).status == "queued"


def test_gather_stops_filling_once_the_replica_drains(queue, store):
    first = queue.submit(job("size-a"))
    queue.submit(job("size-a"))
    batching = Batching(ServerConfig(max_batch_size=4, batch_wait_ms=10_000), queue)
    claimed = queue.claim("replica#0")
    drainer, _ = in_thread(queue.drain, 30)
    while not queue.draining:
        time.sleep(0.01)
    start = time.perf_counter()
    assert [j.id for j in batching.gather(claimed, "replica#0", FourAtOnce())] == [first.id]
    assert time.perf_counter() - start < 2  # not the 10 s batch wait
    queue.end(first.id)
    drainer.join(5)


# -- the replica -----------------------------------------------------------------------------------


def test_a_heartbeat_renews_its_leases_and_requeues_lost_jobs(store, outputs):
    run = RunConfig()
    run.model.path = MODEL
    run.server.lease_s = 30
    queue = JobQueue(store, MODEL, run.server, outputs)
    replica = Replica(store, queue, run, outputs)
    replica.start()
    try:
        assert [r["id"] for r in store.live_replicas(30)] == [replica.id]
        mine = queue.submit(job())
        lost = queue.submit(job())
        assert queue.claim(replica.worker_ids[0]).id == mine.id
        # Another replica took the second job, then died: its lease lapsed.
        assert store.claim(MODEL, "gone#0", lease_s=-1).id == lost.id
        before = store.get(mine.id).lease_until

        time.sleep(0.05)
        replica.beat()
        assert store.get(mine.id).lease_until > before  # renewed
        assert store.get(lost.id).status == "queued"  # re-queued for whoever claims next
        assert replica.served_models() == [MODEL]
    finally:
        replica.stop()
        replica.leave()
    assert store.live_replicas(30) == []


def test_a_service_of_several_models_refuses_another_replicas_model_name(store, outputs):
    from types import SimpleNamespace

    from server.context import check_model
    from server.errors import APIError

    run = RunConfig()
    run.model.path = MODEL
    queue = JobQueue(store, MODEL, run.server, outputs)
    replica = Replica(store, queue, run, outputs)
    svc = SimpleNamespace(served_models=replica.served_models, model_id=MODEL, run=run)
    assert check_model("sora-2", svc) == "sora-2"  # one model served: any name (SGLang's rule)
    store.register("flux#1", "acme/flux", "127.0.0.1:1")
    assert check_model(MODEL, svc) == MODEL and check_model(None, svc) is None
    with pytest.raises(APIError) as refused:
        check_model("acme/flux", svc)  # served by the service, but by another replica
    assert refused.value.status == 400 and "'acme/flux', 'tiny-wan-t2v'" in refused.value.message


# -- store outages (server.store_health) -----------------------------------------------------------------------


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _down() -> Exception:
    import sqlalchemy.exc

    return sqlalchemy.exc.OperationalError("UPDATE jobs", {}, ConnectionRefusedError("connection refused"))


def test_a_store_write_waits_out_a_short_outage_while_the_lease_holds(caplog):
    """The job's result is written once the store is back, not thrown away at the first error; one log line
    for the outage, one when it ends."""
    from server.store_health import StoreHealth

    clock = _Clock()
    health = StoreHealth(lease_s=30, clock=clock)
    calls = []

    class Stop(threading.Event):
        def wait(self, timeout=None):  # time passes on the fake clock instead of the real one
            clock.now += timeout
            return False

    def write():
        calls.append(clock.now)
        if len(calls) < 5:
            raise _down()
        return "completed"

    with caplog.at_level("INFO", logger="sgld.server"):
        assert health.retry_while_leased("recording job x", write, Stop()) == "completed"
    assert len(calls) == 5 and calls[-1] < 30  # retried with backoff, within the lease
    lines = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in line for line in lines) == 1, lines
    assert sum("reachable again" in line for line in lines) == 1, lines


def test_a_store_write_gives_up_once_the_lease_has_lapsed():
    """Past the lease another replica may run the job: the worker stops holding it."""
    import sqlalchemy.exc

    from server.store_health import StoreHealth

    clock = _Clock()
    health = StoreHealth(lease_s=5, clock=clock)

    class Stop(threading.Event):
        def wait(self, timeout=None):
            clock.now += timeout
            return False

    def write():
        raise _down()

    with pytest.raises(sqlalchemy.exc.OperationalError):
        health.retry_while_leased("recording job x", write, Stop())
    assert 3 <= clock.now <= 5
    health.renewed()  # a renewal moves the deadline
    assert health.lease_deadline() == clock.now + 5
