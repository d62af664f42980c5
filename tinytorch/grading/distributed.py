"""Grading beyond one machine: run a per-submission function on a Dask distributed cluster.

Each task carries everything it needs (the submission's bytes, the course's reference data),
so workers need the `tinytorch` package and bubblewrap, not a shared file system. A worker that
dies mid-task is noticed by the scheduler, which runs its tasks again on another worker; the
results come back to the one process that writes the gradebook and grades.csv.
"""
from typing import Callable, Iterable, Iterator


def map_on_cluster(function: Callable, items: Iterable, address: str, *,
                   connect_timeout: float = 30, allowed_failures: int = 3) -> Iterator[tuple]:
    "Yield `(index, function(item))` for every item, in the order the cluster finishes them."
    try:
        from distributed import Client, as_completed
    except ImportError as error:
        raise RuntimeError("grading on a cluster needs Dask: pip install 'tinytorch[cluster]'") from error
    import dask
    items = list(items)
    with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}):
        try:
            client = Client(address, timeout=connect_timeout)
        except (OSError, TimeoutError) as error:
            raise RuntimeError(f"cannot reach the Dask scheduler at {address}: {error}") from error
        with client:
            futures = {client.submit(function, item, pure=False): index for index, item in enumerate(items)}
            for future in as_completed(futures):
                yield futures[future], future.result()
