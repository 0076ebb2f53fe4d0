"""Stand-in for SGLang's perf_logger (the real one imports torch): the record the harness reads back from
``$SGLANG_PERF_LOG_DIR/performance.log``, with the real class's constructor."""

import dataclasses
import os
from datetime import datetime, timezone


@dataclasses.dataclass(init=False)
class RequestPerfRecord:
    """One request's line of performance.log (the harness builds it with ``RequestPerfRecord(**json)``)."""

    request_id: str
    timestamp: str
    commit_hash: str
    tag: str
    stages: list
    steps: list
    total_duration_ms: float
    memory_snapshots: dict

    def __init__(self, request_id, commit_hash, tag, stages, steps, total_duration_ms, memory_snapshots=None,
                 timestamp=None):
        self.request_id, self.commit_hash, self.tag = request_id, commit_hash, tag
        self.stages, self.steps, self.total_duration_ms = stages, steps, total_duration_ms
        self.memory_snapshots = memory_snapshots or {}
        self.timestamp = timestamp or datetime.now(timezone.utc).isoformat()


def get_diffusion_perf_log_dir() -> str:
    """Where the server writes performance.log: ``$SGLANG_PERF_LOG_DIR`` (the suite always sets it)."""
    folder = os.environ.get("SGLANG_PERF_LOG_DIR")
    return os.path.abspath(folder) if folder else ""


def get_git_commit_hash() -> str:
    """SGLang's commit (unknown here)."""
    return "N/A"
