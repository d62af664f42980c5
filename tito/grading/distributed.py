"""Grading beyond one machine: run a per-submission function on a Dask distributed cluster.

Each task carries everything it needs (the submission's bytes, the course's reference data),
so workers need the `tinytorch` package and bubblewrap, not a shared file system. A worker that
dies mid-task is noticed by the scheduler, which runs its tasks again on another worker; the
results come back to the one process that writes the gradebook and grades.csv.
"""
from typing import Callable, Iterable, Iterator


def map_on_cluster(function: Callable, items: Iterable, address: str, *,
                   connect_timeout: float = 30) -> Iterator[tuple]:
    """Yield `(index, function(item))` for every item, in the order the cluster finishes them.
    How often a task may lose its worker before it counts as failed is the scheduler's own
    setting (`distributed.scheduler.allowed-failures`, 3 by default), not the client's."""
    try:
        from distributed import Client, as_completed
    except ImportError as error:
        raise RuntimeError("grading on a cluster needs Dask: pip install 'tinytorch[cluster]'") from error
    items = list(items)
    try:
        client = Client(address, timeout=connect_timeout)
    except (OSError, TimeoutError) as error:
        raise RuntimeError(f"cannot reach the Dask scheduler at {address}: {error}") from error
    with client:
        futures = {client.submit(function, item, pure=False): index for index, item in enumerate(items)}
        for future in as_completed(futures):
            yield futures[future], future.result()
