"""TinyTorch Module 09: spatial operations (Conv2d, pooling, BatchNorm) taught from scratch, with the autograder that grades it

Modules:

- `tinytorch.grading.demo`: `tito demo` (what `make demo` runs): the instructor's whole loop on the bundled samples.
- `tinytorch.grading.distributed`: Grading beyond one machine: run a per-submission function on a Dask distributed cluster.
- `tinytorch.grading.feedback`: Feedback a student may read: the executed notebook with hidden tests and mark schemes cleared, every graded cell followed by its score and the concepts it missed, and nothing that quotes hidden code (no tracebacks, no record lines, no line of a hidden test or solution that is not the student's own).
- `tinytorch.grading.grade`: `tito grade DIR`: grade a class of submissions, one sandboxed kernel each.
- `tinytorch.grading.intake`: Around the grading: what keeps a class's hand-ins and a busy machine from hurting the batch.
- `tinytorch.grading.mutation`: Mutation testing of a module's hidden tests.
- `tinytorch.grading.notebooks`: Notebook surgery the grader needs, in plain Python (no nbgrader import, so workers stay light).
- `tinytorch.grading.record`: The record protocol between a hidden check and the grader.
- `tinytorch.grading.sandbox`: Run one submitted notebook in a fresh, sandboxed, fault-tolerant kernel.
- `tinytorch.grading.scoring`: Per-cell scores of an executed notebook, decided in the grader's own process.
- `tinytorch.student`: The student's side of the course: `tito export` in a student folder, `tito test`, `tito validate`."""

__version__ = "0.9.0"
