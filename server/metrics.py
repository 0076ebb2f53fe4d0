"""Prometheus metrics of one app (its own registry): requests, queue depth, job durations, steps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The app's metrics. Labels hold route templates and statuses only: never prompts or ids."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("sgld_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry)
        self.queue_depth = Gauge("sgld_queue_depth", "jobs waiting for the engine", registry=self.registry)
        self.jobs = Gauge("sgld_jobs", "jobs in the store by status", ["status"], registry=self.registry)
        self.job_seconds = Histogram(
            "sgld_job_duration_seconds", "time from start to end of a job", ["kind", "status"],
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600), registry=self.registry,
        )
        self.batch_size = Histogram("sgld_batch_size", "samples per batched forward (1: a request ran alone)",
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16), registry=self.registry)
        self.batch_wait = Histogram("sgld_batch_wait_seconds", "time the engine waited for requests to batch with the first",
                                    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=self.registry)
        # The shared service (a store several replicas use): what this replica took and took back.
        self.claimed = Counter("sgld_jobs_claimed", "jobs this replica claimed from the queue", registry=self.registry)
        self.leases_expired = Counter("sgld_leases_expired", "running jobs whose server stopped renewing their lease",
                                      registry=self.registry)
        self.requeued = Counter("sgld_jobs_requeued", "jobs re-queued after their server was lost", registry=self.registry)
        self.workers = Gauge("sgld_live_replicas", "replicas of the service with a recent heartbeat", registry=self.registry)
        self.output_bytes = Gauge("sgld_output_bytes", "bytes of output files kept", registry=self.registry)
        self.store_up = Gauge("sgld_job_store_up", "1 when the job store answers, 0 when it does not", registry=self.registry)
        # Steps per second: rate(sgld_denoise_steps_total[1m]).
        self.steps = Counter("sgld_denoise_steps", "denoising steps run", registry=self.registry)
