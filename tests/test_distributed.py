"""Dask grading infrastructure: a LocalCluster with two worker processes, one of which is killed
in the middle of a task; every item still comes back exactly once."""
import os
from pathlib import Path

import pytest
from distributed import LocalCluster

from tito.grading.distributed import map_on_cluster


def square_or_die(item):
    "Kills its worker process the first time it sees item 3 (a marker file remembers)."
    value, marker = item
    if value == 3 and not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)
    return value * value, os.getpid()


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=50) as local:
        yield local


def test_every_item_comes_back_once_even_when_a_worker_dies(cluster, tmp_path):
    marker = tmp_path / "died"
    results = list(map_on_cluster(square_or_die, [(v, str(marker)) for v in range(8)], cluster.scheduler_address))
    assert marker.exists(), "the worker kill did not happen: the test would prove nothing"
    assert sorted(index for index, _ in results) == list(range(8))
    assert {index: value for index, (value, _) in results} == {v: v * v for v in range(8)}
    assert str(os.getpid()) not in {str(pid) for _, (_, pid) in results}, "tasks must run on the workers"


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(RuntimeError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:1"):
        list(map_on_cluster(square_or_die, [(1, "/nonexistent")], "tcp://127.0.0.1:1", connect_timeout=2))
