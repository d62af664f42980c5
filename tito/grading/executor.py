"""The one door through which the grader runs a notebook: `tito.grading.sandbox`."""
from tito.grading.sandbox import (SKIPPED_NOTE, ExecutionResult, KernelLimits,  # noqa: F401
                                       execute_notebook, sandbox_available)
