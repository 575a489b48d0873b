"""One error type for bad user input, so that the CLI and the Slicer modules can show it as it is."""

from __future__ import annotations

from os import PathLike


class InputError(ValueError):
    """Bad input: the message names the input (a path or a role such as 'LGE') and the problem."""

    def __init__(self, source: str | PathLike[str], problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")
