"""The options reference in Markdown, generated from the option dataclasses themselves.

``docs/user-guide.md`` embeds this text between marker comments, and a test keeps the two
identical, so the documented defaults are always the real ones.
"""

from __future__ import annotations

from typing import Any

from ssvae_core.config import CORE_SECTIONS
from ssvae_core.options import describe_options
from ssvae_core.registry import Registry

BEGIN_MARKER = "<!-- options-reference:begin -->"
END_MARKER = "<!-- options-reference:end -->"


def _default_text(value: Any) -> str:
    if value is None:
        return "omitted"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return f"`{list(value)}`"
    return f"`{value}`"


def options_table(options_class: type) -> str:
    """A Markdown table of one options dataclass (empty string if it has no options)."""
    records = describe_options(options_class)
    if not records:
        return ""
    rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for record in records:
        meaning = record["help"].replace("|", "\\|")
        if "choices" in record:
            meaning += "; one of " + ", ".join(f"`{c}`" for c in record["choices"])
        rows.append(
            f"| `{record['name']}` | {record['type']} | {_default_text(record['default'])} | {meaning} |"
        )
    return "\n".join(rows)


def reference_markdown(registry: Registry) -> str:
    """Every core section and every registered component with its options."""
    parts = ["### Core sections", ""]
    for section, options_class in CORE_SECTIONS.items():
        parts += [f"#### `[{section}]`", "", options_table(options_class), ""]
    parts += ["### Components", ""]
    for component in registry:
        heading = f"#### {component.kind} `{component.name}` ({component.package})"
        if component.kind == "loss_term":
            heading = f"#### loss term `[loss.{component.name}]` ({component.package})"
        elif component.kind == "acquisition":
            heading = (
                f"#### acquisition `{component.name}` ({component.package}): "
                f"`ssvae query --strategy {component.name}`"
            )
        parts += [heading, "", component.factory.description + ".", ""]
        table = options_table(component.factory.options)
        parts += [table, ""] if table else ["No options.", ""]
    return "\n".join(parts).rstrip() + "\n"
