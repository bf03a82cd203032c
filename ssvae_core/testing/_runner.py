"""The machinery under the conformance checks: errors, the check table, the property runner.

A check is a named function of a prepared *subject* (the built component plus what it needs
to run). Property checks draw inputs with Hypothesis through :func:`for_all`; a failing
property raises :class:`Violation` carrying the shrunk input, which :func:`run_check` turns
into a :class:`ConformanceError` naming the component, the check, its invariant and that
minimal counterexample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssvae_core.components import KINDS
from ssvae_core.types import EncoderOutput


class ConformanceError(AssertionError):
    """A component breaks one of the contract's invariants.

    ``component`` names it (kind, name, package), ``check`` is the check's name,
    ``invariant`` the rule it states, ``detail`` what went wrong and ``counterexample`` the
    minimal (Hypothesis-shrunk) input that shows it, if the check draws inputs.
    """

    def __init__(
        self,
        component: str,
        check: str,
        invariant: str,
        detail: str,
        counterexample: str | None = None,
    ):
        self.component = component
        self.check = check
        self.invariant = invariant
        self.detail = detail
        self.counterexample = counterexample
        lines = [f"{component} fails conformance check {check!r}", f"  invariant: {invariant}"]
        lines.append(f"  violation: {detail}")
        if counterexample:
            lines.append("  minimal counterexample:")
            lines.extend(f"    {line}" for line in counterexample.splitlines())
        super().__init__("\n".join(lines))


class NotApplicable(Exception):
    """The check does not apply to this component; the message says why."""


class Violation(AssertionError):
    """Raised inside a check when the invariant fails; carries the input that broke it."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail
        self.example: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Check:
    """One named invariant for one kind of component.

    ``function(subject)`` returns ``None`` or a short note when the invariant holds, raises
    :class:`Violation` when it does not and :class:`NotApplicable` when it cannot apply.
    """

    kind: str
    name: str
    invariant: str
    function: Callable[[Any], str | None]


CHECKS: dict[str, list[Check]] = {kind: [] for kind in KINDS}


def check(kind: str, name: str, invariant: str) -> Callable[[Callable[[Any], str | None]], Check]:
    """Register the decorated function as the check ``name`` for components of ``kind``."""

    def register(function: Callable[[Any], str | None]) -> Check:
        entry = Check(kind, name, invariant, function)
        CHECKS[kind].append(entry)
        return entry

    return register


def expect(condition: Any, detail: str) -> None:
    """Raise :class:`Violation` with ``detail`` unless ``condition`` holds."""
    if not bool(condition):
        raise Violation(detail)


def expect_close(
    actual: Any, expected: Any, what: str, *, rtol: float = 1e-5, atol: float = 1e-5
) -> None:
    """Raise :class:`Violation` unless ``actual`` and ``expected`` agree elementwise."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    expect(actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}")
    if np.allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=False):
        return
    difference = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    worst = np.unravel_index(
        np.nanargmax(np.where(np.isnan(difference), np.inf, difference)), difference.shape
    )
    raise Violation(
        f"{what}: {format_value(actual)} != {format_value(expected)} "
        f"(largest difference {difference[worst]:.3g} at index {tuple(int(i) for i in worst)})"
    )


def _hypothesis_settings(max_examples: int) -> settings:
    # Derandomised, without an example database: the same examples on every run and
    # machine, and nothing written into a plugin author's project.
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        report_multiple_bugs=False,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def for_all(
    subject: Any,
    strategy: st.SearchStrategy[dict[str, Any]],
    body: Callable[[dict[str, Any]], None],
) -> None:
    """Run ``body(example)`` on Hypothesis examples; a failure keeps the shrunk example.

    ``subject.settings.max_examples`` bounds the examples. Any exception the component
    raises counts as a violation of the check at hand.
    """

    @_hypothesis_settings(subject.settings.max_examples)
    @given(strategy)
    def run(example: dict[str, Any]) -> None:
        try:
            body(example)
        except Violation as violation:
            violation.example = example
            raise
        except NotApplicable:
            raise
        except Exception as error:
            wrapped = Violation(f"raised {describe_error(error)}")
            wrapped.example = example
            raise wrapped from error

    run()


def run_check(subject: Any, entry: Check) -> str | None:
    """Run one check on a prepared subject; a failure becomes a :class:`ConformanceError`."""
    try:
        return entry.function(subject)
    except Violation as violation:
        example = format_example(violation.example) if violation.example is not None else None
        raise ConformanceError(
            subject.label, entry.name, entry.invariant, violation.detail, example
        ) from None
    except (NotApplicable, ConformanceError):
        raise
    except Exception as error:
        raise ConformanceError(
            subject.label, entry.name, entry.invariant, f"raised {describe_error(error)}"
        ) from error


def describe_error(error: BaseException, max_lines: int = 12) -> str:
    """``Type: message``, cut to its first lines (type-check messages run long)."""
    lines = str(error).strip().splitlines() or [""]
    text = "\n    ".join(lines[:max_lines])
    if len(lines) > max_lines:
        text += "\n    ..."
    return f"{type(error).__name__}: {text}"


def format_value(value: Any) -> str:
    """A short, readable rendering of a drawn value (small arrays in full)."""
    if isinstance(value, EncoderOutput):
        fields = ", ".join(
            f"{name}={format_value(getattr(value, name))}"
            for name in ("z_mean", "z_log_var", "logits")
        )
        return f"EncoderOutput({fields})"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        array = np.asarray(value)
        kind = f"{array.dtype.kind}{array.dtype.itemsize * 8}"
        header = f"{kind}{list(array.shape)}"
        if array.size <= 24:
            body = np.array2string(array, precision=4, separator=", ", suppress_small=True)
            return f"{header} {' '.join(body.split())}"
        if array.dtype.kind == "b":
            return f"{header} with {int(array.sum())} true"
        return f"{header} in [{np.nanmin(array):.4g}, {np.nanmax(array):.4g}]"
    return repr(value)


def format_example(example: Mapping[str, Any]) -> str:
    """One ``name = value`` line per drawn input."""
    return "\n".join(f"{name} = {format_value(value)}" for name, value in example.items())
