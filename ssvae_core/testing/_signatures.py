"""Calling a component through its protocol's annotated signature, checked by beartype.

The protocol methods carry jaxtyping shapes (``Float[Array, "B D"]``); an implementation's
own annotations may differ or be missing. ``protocol_method`` wraps a bound method in
a function with the protocol's parameter names and resolved annotations, checked by
``jaxtyping.jaxtyped(typechecker=beartype)``, so every call checks dtypes, ranks and that
the shape names agree across arguments and the return value.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from beartype import beartype
from jaxtyping import jaxtyped


def _parameter_list(parameters: list[inspect.Parameter]) -> tuple[str, str]:
    """``def`` parameters and the matching call arguments, keyword-only after ``*``."""
    declared, passed = [], []
    star = False
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            if not star:
                declared.append("*")
                star = True
            declared.append(parameter.name)
            passed.append(f"{parameter.name}={parameter.name}")
        else:
            declared.append(parameter.name)
            passed.append(parameter.name)
    return ", ".join(declared), ", ".join(passed)


def protocol_method(protocol: type, name: str, instance: Any) -> Callable[..., Any]:
    """``instance.name`` behind the signature of ``protocol.name``, type-checked on every call."""
    abstract = getattr(protocol, name)
    hints = typing.get_type_hints(abstract)
    parameters = list(inspect.signature(abstract).parameters.values())[1:]  # drop self
    declared, passed = _parameter_list(parameters)
    namespace: dict[str, Any] = {"_bound": getattr(instance, name)}
    # A generated function, because beartype reads parameter names from the code object.
    exec(f"def {name}({declared}):\n    return _bound({passed})\n", namespace)
    function = namespace[name]
    function.__annotations__ = {
        parameter.name: hints[parameter.name] for parameter in parameters if parameter.name in hints
    }
    if "return" in hints:
        function.__annotations__["return"] = hints["return"]
    function.__qualname__ = f"{type(instance).__name__}.{name}"
    function.__module__ = type(instance).__module__
    return jaxtyped(typechecker=beartype)(function)
