"""Bad input fails a step with the file and the problem in the UI, not a stack trace to decode."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from cost_pipeline.lib.errors import InputError


@contextmanager
def input_errors_as_failures() -> Iterator[None]:
    try:
        yield
    except InputError as exc:
        raise dg.Failure(
            description=str(exc),
            metadata={"source": exc.source, "problem": exc.problem},
            allow_retries=False,
        ) from None
