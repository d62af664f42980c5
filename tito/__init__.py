"""`tito`: the course tooling around the `tinytorch` library — the command line, release, grading,
the submission service and the student's side (export, test, validate). A student's notebook never
imports it: the grading kernel sees only the library's student runtime (`tito.grading.sandbox`).

Imports go one way (docs/architecture.md): `tito` imports `tinytorch`, never the reverse."""
