"""The one door through which the grader runs a notebook: `tinytorch.grading.sandbox`.

Until the sandbox module exists this falls back to a stand-in with the same interface that
runs an unsandboxed kernel (used only with `--no-sandbox`)."""
try:
    from tinytorch.grading.sandbox import (ExecutionResult, KernelLimits, execute_notebook,  # noqa: F401
                                           sandbox_available)
except ModuleNotFoundError as _missing:
    if _missing.name != "tinytorch.grading.sandbox":
        raise
    import os
    import time
    from dataclasses import dataclass, field

    @dataclass(frozen=True)
    class KernelLimits:
        cell_timeout: int = 60
        submission_timeout: int = 300
        memory_mb: int = 4096
        max_processes: int = 64
        max_output_bytes: int = 1_000_000
        sandbox: bool = True

        @classmethod
        def from_settings(cls, settings):
            return cls(settings.cell_timeout, settings.submission_timeout, settings.memory_mb,
                       settings.max_processes, settings.max_output_bytes, settings.sandbox)

    @dataclass
    class ExecutionResult:
        notebook: object
        status: str
        detail: str
        seconds: float
        timed_out_cells: list = field(default_factory=list)

    def sandbox_available():
        return False, "tinytorch.grading.sandbox is not installed yet"

    def execute_notebook(nb, workdir, limits):
        from nbclient import NotebookClient
        from nbclient.exceptions import CellTimeoutError, DeadKernelError
        start = time.monotonic()
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        client = NotebookClient(nb, timeout=limits.cell_timeout, allow_errors=True, kernel_name="python3",
                                raise_on_iopub_timeout=False, resources={"metadata": {"path": str(workdir)}})
        status, detail = "ok", ""
        try:
            client.execute(env=env, cwd=str(workdir))
        except CellTimeoutError as error:
            status, detail = "timeout", str(error).splitlines()[0]
        except DeadKernelError as error:
            status, detail = "crashed", f"kernel died: {error}"
        except Exception as error:
            status, detail = "crashed", f"{type(error).__name__}: {error}"
        return ExecutionResult(nb, status, detail, time.monotonic() - start, [])
