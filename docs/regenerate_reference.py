"""Rewrite the options reference in docs/user-guide.md from the option dataclasses."""

from __future__ import annotations

from pathlib import Path

from ssvae_core.reference import BEGIN_MARKER, END_MARKER, reference_markdown
from ssvae_core.registry import Registry

guide = Path(__file__).with_name("user-guide.md")
text = guide.read_text(encoding="utf-8")
before, rest = text.split(BEGIN_MARKER, 1)
after = rest.split(END_MARKER, 1)[1]
block = reference_markdown(Registry(entry_points=False))
guide.write_text(f"{before}{BEGIN_MARKER}\n\n{block}\n{END_MARKER}{after}", encoding="utf-8")
