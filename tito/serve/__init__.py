"""`tito serve`: a small submission service that grades each upload at once, through the same
pipeline and sandbox as `tito grade` (tito.grading.pipeline), and shows the same feedback page.

- `store`:  the durable state in the course folder (.tito-serve/): tokens (hashes only), the
            attempts queue in SQLite, the uploaded notebooks content-addressed and fsync'd;
- `worker`: a bounded pool of grading threads (or a Dask scheduler) that drains the queue;
- `app`:    the Starlette web app (student and instructor pages, the JSON API `tito submit` uses).
"""
