"""The thread budget: each engine worker on a machine gets its share of the cores (replicas that each took
every core ran at 0.56-0.61x the throughput of one on 2 cores)."""

from __future__ import annotations

import os

import pytest

from sgld.run_config import run_config_from_options
from server.threads import thread_budget


@pytest.mark.parametrize("options,cores,expected", [
    ({}, 8, 8),
    ({"dp_size": 2, "num_gpus": 2}, 8, 4),
    ({"replicas_on_host": 2}, 2, 1),
    ({"replicas_on_host": 3, "dp_size": 2, "num_gpus": 2}, 4, 1),  # never below one
    ({"torch_threads": 3, "replicas_on_host": 4}, 2, 3),  # an explicit budget wins
])
def test_the_budget_divides_the_cores_among_the_engine_workers(options, cores, expected):
    run = run_config_from_options({"model_path": "tiny-wan-t2v", **options})
    assert thread_budget(run, cores) == expected


def test_a_bad_budget_is_refused_naming_the_key():
    from sgld.errors import UserError

    with pytest.raises(UserError, match="server.torch_threads must be >= 1, got 0"):
        run_config_from_options({"model_path": "tiny-wan-t2v", "torch_threads": 0})
    with pytest.raises(UserError, match="server.replicas_on_host must be >= 1, got 0"):
        run_config_from_options({"model_path": "tiny-wan-t2v", "replicas_on_host": 0})


def test_a_server_logs_its_budget_at_start(server):
    log = server.log.read_text()
    cores = os.cpu_count()
    assert f"torch threads per engine worker: {cores} ({cores} cores / 1 engine workers on this host" in log, log[-2000:]
