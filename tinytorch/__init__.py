"""TinyTorch Module 09: spatial operations (Conv2d, pooling, BatchNorm) taught from scratch, with the autograder that grades it

Modules:

- `tinytorch.checks`: Checks that run on their own: the visible and hidden checks of a graded cell.
- `tinytorch.commands.demo`: `tito demo` (what `make demo` runs): the instructor's whole loop on the bundled samples.
- `tinytorch.grading.deadline`: Deadlines, grace, late penalties and extensions (settings.ini `[deadline]`).
- `tinytorch.grading.distributed`: Grading beyond one machine: run a per-submission function on a Dask distributed cluster.
- `tinytorch.grading.feedback`: Feedback a student may read: the executed notebook with hidden tests and mark schemes cleared, every graded cell followed by its score and the concepts it missed, and nothing that quotes hidden code (no tracebacks, no record lines, no line of a hidden test or solution that is not the student's own).
- `tinytorch.grading.grade`: `tito grade DIR`: grade a class of submissions, one sandboxed kernel each.
- `tinytorch.grading.gradescope`: Gradescope's autograder, with the course's own checks.
- `tinytorch.grading.intake`: Around the grading: what keeps a class's hand-ins and a busy machine from hurting the batch.
- `tinytorch.grading.lms`: Into and out of the systems a course already uses.
- `tinytorch.grading.misconceptions`: Feedback that names the misconception: a library of the wrong loops students really write.
- `tinytorch.grading.mutation`: Mutation testing of a module's hidden tests.
- `tinytorch.grading.notebooks`: Notebook surgery the grader needs, in plain Python (no nbgrader import, so workers stay light).
- `tinytorch.grading.policy`: The course's library-use policy (settings.ini `[policy]`): what the graded loop functions may not use.
- `tinytorch.grading.record`: The record protocol between a hidden check and the grader.
- `tinytorch.grading.sandbox`: Run one submitted notebook in a fresh, sandboxed, fault-tolerant kernel.
- `tinytorch.grading.scoring`: Per-check and per-cell scores of an executed notebook, decided in the grader's own process.
- `tinytorch.grading.similarity`: Which students handed in the same code, and which share the same wrong answers: flags for a person to look at, never a change of score.
- `tinytorch.grading.term`: What a term adds to an autograded result: written answers graded by hand, the deadline, and regrades — applied when grades.csv is written, never stored in the journal.
- `tinytorch.serve.app`: The web app of `tito serve` (Starlette; Jinja2 pages with autoescape; signed session cookies).
- `tinytorch.serve.store`: The durable state of `tito serve`: tokens, the attempts queue and the uploads, in `.tito-serve/`.
- `tinytorch.serve.worker`: Grading the queue of `tito serve` with a bounded pool of threads, or on a Dask cluster.
- `tinytorch.student`: The student's side of the course: `tito export` in a student folder, `tito test`, `tito validate`."""

__version__ = "0.9.0"
