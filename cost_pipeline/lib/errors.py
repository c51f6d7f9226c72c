"""Errors about input that users must fix: each names the file (and row or column) at fault."""


class InputError(ValueError):
    """Bad billing, usage or tag input. Raised before anything is written."""

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")
