"""Which queued jobs share one forward, and gathering them from the queue for an engine worker.

A job's batch key is recorded when it is submitted (any replica of the model batches by it). A
worker that claims a job then claims queued jobs with the same key for up to
``server.batch_wait_ms``, up to the batch limit in samples (``n`` images count each).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Optional

from sgld.config.schema import RunConfig, ServerConfig

from server.engine import within_batch_pixels
from server.job_queue import JobQueue
from server.store import Job

if TYPE_CHECKING:
    from server.engine import Engine


def samples(job: Job) -> int:
    """How many outputs (samples in a batch) a job makes: ``n`` images or videos."""
    return int(job.options.get("n", 1))


class Batching:
    """The server's batching limits applied to jobs of one queue."""

    def __init__(self, limits: ServerConfig, queue: JobQueue, metrics: Any = None):
        self.limits = limits
        self.queue = queue
        self.metrics = metrics

    def limit(self, engine: "Engine") -> int:
        """Most samples one forward may hold: the server's setting, within what the engine can batch."""
        return max(1, min(self.limits.max_batch_size, engine.batch_limit()))

    def key(self, job: Job, run: RunConfig, engine: "Engine") -> Optional[str]:
        """The batch key of ``job`` checked as ``run`` (as recorded in the store). Too large a sample
        (``server.batch_max_pixels``) or an edit whose size follows its input image runs alone (None); adapters
        are part of the key (one set per forward).
        """
        from sgld.request import Request

        s = run.sampling
        if s.height is None or s.width is None:
            return None
        if not within_batch_pixels(s, engine.pipeline.spec.output == "video", self.limits.batch_max_pixels):
            return None
        loras = json.dumps(job.options.get("loras"), sort_keys=True)
        return json.dumps((engine.pipeline.spec.batch_key(Request.from_sampling(s)), loras))

    def gather(self, job: Job, worker_id: str, engine: "Engine") -> list[Job]:
        """``job`` and queued jobs that can share its forward (same batch key), claimed while ``batch_wait_ms`` lasts.

        Filling stops once the replica drains: a draining replica claims nothing more."""
        limit = self.limit(engine)
        count = samples(job)
        if limit <= 1 or count >= limit or job.batch_key is None:
            return [job]
        jobs = [job]
        start = time.perf_counter()
        deadline = start + self.limits.batch_wait_ms / 1000
        while count < limit:
            other = self.queue.claim(worker_id, batch_key=job.batch_key)
            if other is not None:
                if count + samples(other) > limit:  # too many images for this batch: it waits for the next
                    self.queue.give_back(other.id, worker_id)
                    break
                jobs.append(other)
                count += samples(other)
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or self.queue.draining:
                break
            self.queue.wait_for_work(min(remaining, 0.02))
        if self.metrics is not None:
            self.metrics.batch_wait.observe(time.perf_counter() - start)
        return jobs
