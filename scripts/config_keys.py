"""Writes docs/config.md: every config key, its type, its default and its comment in src/switokd/config.py.

    .venv/bin/python scripts/config_keys.py          # rewrite docs/config.md
    .venv/bin/python scripts/config_keys.py --check  # exit 1 if docs/config.md is out of date (the test suite)
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import typing
from pathlib import Path

from switokd import config as C

OUT = Path(__file__).resolve().parents[1] / "docs" / "config.md"
SECTIONS = [("data", C.DataConfig), ("method", C.MethodConfig), ("train", C.TrainConfig),
            ("networks.NAME", C.NetworkConfig)]


def comments(cls: type) -> dict[str, str]:
    """Each field's trailing comment in the class's source."""
    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def type_name(tp) -> str:
    text = str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")
    return text.replace("NoneType", "None")


def default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    return repr(f.default_factory())  # type: ignore[misc]


def render() -> str:
    parts = ["# Configuration keys", "",
             "Generated from the comments in `src/switokd/config.py` by `scripts/config_keys.py` (the test suite "
             "checks that this page is up to date). Layering: the dataclass defaults, then the YAML file "
             "(`--config`), then `key=value` overrides, in order. An unknown key, a value of the wrong type or "
             "out of range is one line naming it (exit 2), with a *did you mean* for a close key.", "",
             "`preset` (`1T1S`, `2T1S`, `1T2S`) fills `networks` with the paper's basis topologies unless the YAML "
             "file lists networks. Networks are addressed by name or index: `networks.student.lr=0.01`, "
             "`networks.0.model=wrn16_4`.", ""]
    for prefix, cls in SECTIONS:
        hints = typing.get_type_hints(cls)
        notes = comments(cls)
        parts += [f"## `{prefix}`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            note = notes.get(f.name, "").replace("|", "\\|")
            tp = type_name(hints[f.name]).replace("|", "or")
            parts.append(f"| `{prefix}.{f.name}` | `{tp}` | `{default(f)}` | {note} |")
        parts.append("")
    return "\n".join(parts)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python scripts/config_keys.py", file=sys.stderr)
            sys.exit(1)
    else:
        OUT.write_text(text)
        print(f"wrote {OUT}")
