"""The machinery under the conformance checks: errors, the check table, the property runner.

A check is a named function of a prepared *subject* (the built component plus what it needs
to run). Property checks draw inputs with Hypothesis through ``for_all``; a failing
property raises ``Violation`` carrying the shrunk input, which ``run_check`` turns
into a ``ConformanceError`` naming the component, the check, its invariant and that
minimal counterexample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky

from ssvae_core.modelling.components import KINDS
from ssvae_core.modelling.types import EncoderOutput


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
        hint: str = "",
    ):
        self.component = component
        self.check = check
        self.invariant = invariant
        self.detail = detail
        self.counterexample = counterexample
        self.hint = hint
        lines = [f"{component} fails conformance check {check!r}", f"  invariant: {invariant}"]
        lines.append(f"  violation: {detail}")
        if counterexample:
            lines.append("  minimal counterexample:")
            lines.extend(f"    {line}" for line in counterexample.splitlines())
        if hint:
            lines.append(f"  usual cause: {hint}")
        super().__init__("\n".join(lines))


class NotApplicable(Exception):
    """The check does not apply to this component; the message says why."""


class Violation(AssertionError):
    """Raised inside a check when the invariant fails; carries the input that broke it and,
    where the failure itself shows its cause, a hint that replaces the check's own."""

    def __init__(self, detail: str, hint: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.hint = hint
        self.example: Mapping[str, Any] | None = None


# Errors JAX raises when Python needs the value of a traced array: the code works eagerly
# and fails under jit (and eval_shape, vmap, grad).
TRACED_VALUE_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
)
TRACED_VALUE_HINT = (
    "Python control flow (if, while, bool(), int(), float()) or NumPy on a traced array: it "
    "works eagerly and fails under jit; use jnp.where, jax.lax.cond or jnp functions instead"
)


def cause_hint(error: BaseException) -> str | None:
    """A hint that names the cause shown by ``error`` itself, if it shows one."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, TRACED_VALUE_ERRORS):
            return TRACED_VALUE_HINT
        seen = seen.__cause__ or seen.__context__
    return None


@dataclass(frozen=True)
class Check:
    """One named invariant for one kind of component.

    ``function(subject)`` returns ``None`` or a short note when the invariant holds, raises
    ``Violation`` when it does not and ``NotApplicable`` when it cannot apply.
    ``hint`` is the usual cause of a failure, in one line, for the error message.
    """

    kind: str
    name: str
    invariant: str
    function: Callable[[Any], str | None]
    hint: str = ""


CHECKS: dict[str, list[Check]] = {kind: [] for kind in KINDS}


def check(
    kind: str, name: str, invariant: str, *, hint: str
) -> Callable[[Callable[[Any], str | None]], Check]:
    """Register the decorated function as the check ``name`` for components of ``kind``;
    ``hint`` names the usual cause of a failure."""

    def register(function: Callable[[Any], str | None]) -> Check:
        entry = Check(kind, name, invariant, function, hint)
        CHECKS[kind].append(entry)
        return entry

    return register


def expect(condition: Any, detail: str) -> None:
    """Raise ``Violation`` with ``detail`` unless ``condition`` holds."""
    if not bool(condition):
        raise Violation(detail)


def expect_close(
    actual: Any, expected: Any, what: str, *, rtol: float = 1e-5, atol: float = 1e-5
) -> None:
    """Raise ``Violation`` unless ``actual`` and ``expected`` agree elementwise."""
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


def expect_identical(first: Any, second: Any, what: str) -> None:
    """Raise ``Violation`` unless two pytrees of arrays are bitwise equal."""
    first_leaves, first_tree = jax.tree.flatten(first)
    second_leaves, second_tree = jax.tree.flatten(second)
    expect(first_tree == second_tree, f"{what}: the two calls return different structures")
    for index, (a, b) in enumerate(zip(first_leaves, second_leaves, strict=True)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape == b.shape and np.array_equal(a, b, equal_nan=True):
            continue
        difference = (
            float(np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64))))
            if a.shape == b.shape and a.size
            else float("nan")
        )
        raise Violation(
            f"{what}: output {index} differs between two calls with the same inputs and key "
            f"(by up to {difference:.3g}): {format_value(a)} vs {format_value(b)}"
        )


def _hypothesis_settings(max_examples: int, shrink: bool = True) -> settings:
    # Derandomised, without an example database: the same examples on every run and
    # machine, and nothing written into a plugin author's project.
    return settings(
        max_examples=max_examples,
        phases=tuple(Phase) if shrink else tuple(p for p in Phase if p is not Phase.shrink),
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

    @_hypothesis_settings(subject.settings.max_examples, subject.settings.shrink)
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

    try:
        run()
    except Flaky as flaky:
        # Hypothesis replays a failing example while shrinking; if the replay passes, the
        # component's output depends on more than its inputs and key.
        raise Violation(
            "the outcome differs between two calls with the same input (an example failed, "
            "then passed when replayed): the output depends on hidden randomness or state"
        ) from flaky


def run_check(subject: Any, entry: Check) -> str | None:
    """Run one check on a prepared subject; a failure becomes a ``ConformanceError``."""
    try:
        return entry.function(subject)
    except Violation as violation:
        example = format_example(violation.example) if violation.example is not None else None
        hint = violation.hint or cause_hint(violation) or entry.hint
        raise ConformanceError(
            subject.label, entry.name, entry.invariant, violation.detail, example, hint
        ) from None
    except (NotApplicable, ConformanceError):
        raise
    except Exception as error:
        raise ConformanceError(
            subject.label,
            entry.name,
            entry.invariant,
            f"raised {describe_error(error)}",
            hint=cause_hint(error) or entry.hint,
        ) from error


# Lines of a beartype / jaxtyping report that say what was wrong; the rest (the whole
# signature, every argument's shape, the memo of shape names) repeats what we know.
_TYPE_CHECK_KEYS = ("violates type hint", "type-check error", "return", "parameter", "shape")


def describe_error(error: BaseException, max_lines: int = 6) -> str:
    """``Type: message``, cut to the lines that matter.

    A type-check report (beartype through jaxtyping) runs to dozens of lines; it is cut
    to its first line and the lines naming the argument or return value that broke the
    hint. Other messages keep their first ``max_lines`` lines.
    """
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()] or [""]
    name = type(error).__name__
    if "TypeCheckError" in name or "Beartype" in name or "jaxtyping" in type(error).__module__:
        lines = _type_check_lines(lines)
    text = "\n    ".join(lines[:max_lines])
    if len(lines) > max_lines:
        text += f"\n    ... ({len(lines) - max_lines} more lines)"
    return f"{name}: {text}"


def _type_check_lines(lines: list[str]) -> list[str]:
    """The first line, then those naming what broke the hint (at most 80 characters each)."""
    kept = [lines[0]]
    for line in lines[1:]:
        lowered = line.lower()
        if any(key in lowered for key in _TYPE_CHECK_KEYS) and line not in kept:
            kept.append(line if len(line) <= 160 else line[:157] + "...")
        if len(kept) == 3:
            break
    return kept


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
