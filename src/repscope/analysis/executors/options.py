"""The one check of executor options against what a backend can do.

Each backend class declares what it refuses in ``Executor.refuses`` (option -> why);
:func:`option_problem` is the only code that reads those rules. Its :class:`OptionProblem`
renders in the vocabulary of the caller: a parameter error for the Python API
(:func:`~repscope.analysis.executors.make_executor`, :meth:`Executor.map`) or a config-option
message (``repscope analyze``'s :func:`~repscope.analysis.plan.check_config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPTIONS = ("workers", "address", "timeout")
"The options a backend may refuse, in the order they are checked."


@dataclass(frozen=True)
class OptionProblem:
    """An option the chosen executor does not take."""

    name: str
    "The option: 'workers' (more than one), 'address' or 'timeout'."
    value: Any
    "The value given."
    kind: str
    "The executor that refuses it."
    expected: str
    "What the option must be for that executor: 'None' or 'None or 1'."
    reason: str
    "Why the executor refuses it (a verb phrase: 'runs one task at a time')."
    takers: tuple[str, ...] = ()
    "Executors that take the option (empty when the caller does not know them)."

    def _use(self) -> str:
        return " or ".join(repr(k) for k in self.takers)

    def parameter_error(self, fn: str, subject: str | None = None) -> ValueError:
        """The API form: ``The 'workers' parameter of make_executor must be None or 1 for
        kind='local' (it runs one task at a time; use executor 'process' or 'ray'). Got 4
        instead.`` ``subject`` names the executor (default ``kind='<kind>'``)."""
        from repscope._validate import param_error  # imports torch; workers import this package

        hint = f"it {self.reason}" + (f"; use executor {self._use()}" if self.takers else "")
        subject = subject or f"kind={self.kind!r}"
        return param_error(fn, self.name, f"{self.expected} for {subject} ({hint})", self.value)

    def config_message(self, option: str | None = None) -> str:
        """The config form: ``The 'workers' option needs executor 'process' or 'ray': the
        local executor runs one task at a time. Got workers=4 with executor 'local'.``
        ``option`` is the config's name for it (default: the API name)."""
        option = option or self.name
        return (f"The '{option}' option needs executor {self._use()}: the {self.kind} executor "
                f"{self.reason}. Got {option}={self.value!r} with executor {self.kind!r}.")


def option_problem(backend: Any, *, workers: Any = None, address: Any = None,
                   timeout: Any = None,
                   backends: Mapping[str, Any] | None = None) -> OptionProblem | None:
    """The first option that ``backend`` (an :class:`Executor` subclass) refuses, or None.

    ``None`` never conflicts, nor does ``workers=1`` (what a one-task executor runs anyway);
    only the rules are checked here, not the values' types. ``backends`` (kind -> class), when
    given, names the executors that do take the option.
    """
    given = {"workers": workers, "address": address, "timeout": timeout}
    for name in OPTIONS:
        value, why = given[name], backend.refuses.get(name)
        if why is None or value is None or (name == "workers" and value == 1):
            continue
        takers = tuple(k for k, b in (backends or {}).items() if name not in b.refuses)
        return OptionProblem(name, value, backend.kind,
                             "None or 1" if name == "workers" else "None", why, takers)
    return None
