"""Grading tooling: release, sandboxed autograding, feedback. Not generated from notebooks."""
