"""TinyTorch Module 09: spatial operations (Conv2d, pooling, BatchNorm) taught from scratch, with the autograder that grades it

Modules:

- `tinytorch.checks`: Checks that run on their own: the visible and hidden checks of a graded cell.
- `tinytorch.record`: The record protocol between a hidden check and the grader."""

__version__ = "0.9.0"
