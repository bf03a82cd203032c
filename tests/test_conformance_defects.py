"""The seeded-defect corpus: each broken component is caught by the check meant for it.

``ssvae_core.testing.defects`` holds the corpus; each case runs only the intended check and
requires its message to carry the defect's phrase (so it fails for the intended reason)
and the check's hint. ``python -m ssvae_core.testing.defects`` runs every check on every
defect for the catch table in ``docs/plugins.md``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ssvae_core.testing import ConformanceError, conformance_checks, prepare, run_check
from ssvae_core.testing.defects import DEFECTS, Defect

# Defects checked in a process of their own: in a worker whose earlier tests trained CLI
# runs, the naive softmax head's overflow went unseen (its program came back without the
# NaN rows), even with the persistent XLA cache and the jit caches turned off around it.
FRESH_PROCESS = frozenset({"naive softmax head"})

_FRESH_CHECK = """
import sys
from ssvae_core.testing import ConformanceError, conformance_checks, prepare, run_check
from ssvae_core.testing.defects import DEFECTS
(defect,) = [d for d in DEFECTS if d.name == sys.argv[1]]
subject = prepare(defect.factory, defect.options, kind=defect.kind, shrink=False)
(entry,) = [e for e in conformance_checks(defect.kind) if e.name == defect.check]
try:
    run_check(subject, entry)
except ConformanceError as error:
    assert error.check == defect.check, error.check
    assert defect.message in str(error), str(error)
    assert f"usual cause: {defect.hint or entry.hint}" in str(error), str(error)
    print("caught")
else:
    print("not caught")
"""


def _check_in_a_fresh_process(defect: Defect) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_CHECK, defect.name],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "caught", result.stdout


@pytest.fixture(autouse=True)
def _compile_afresh() -> Iterator[None]:
    """Each defect's programs are compiled afresh, neither taken from this process's jit
    caches nor loaded from the session's persistent XLA cache (conftest): after other
    tests had filled them, the naive softmax head was served a program whose results had
    no overflow, and the defect went unseen."""
    import jax
    from jax._src import compilation_cache  # whether the cache is used is decided once

    before = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    jax.clear_caches()
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", before)
        compilation_cache.reset_cache()


@pytest.mark.parametrize("defect", DEFECTS, ids=lambda defect: f"{defect.kind}:{defect.name}")
def test_defect_is_caught_by_its_intended_check(defect: Defect) -> None:
    if defect.name in FRESH_PROCESS:
        _check_in_a_fresh_process(defect)
        return
    # whether and why the check fails is under test here, not the smallest counterexample
    subject = prepare(defect.factory, defect.options, kind=defect.kind, shrink=False)
    (entry,) = [entry for entry in conformance_checks(defect.kind) if entry.name == defect.check]
    with pytest.raises(ConformanceError) as caught:
        run_check(subject, entry)
    error = caught.value
    assert error.check == defect.check
    assert defect.message in str(error), str(error)
    assert f"usual cause: {defect.hint or entry.hint}" in str(error)


def test_the_corpus_spans_every_kind_with_at_least_twenty_defects() -> None:
    kinds = {defect.kind for defect in DEFECTS}
    assert {"prior", "encoder", "decoder", "head", "loss_term"} <= kinds
    assert len(DEFECTS) >= 20
    assert len({defect.name for defect in DEFECTS}) == len(DEFECTS)
    for defect in DEFECTS:
        names = {entry.name for entry in conformance_checks(defect.kind)}
        assert defect.check in names, f"{defect.name}: no {defect.kind} check {defect.check!r}"
