"""The README's code blocks, as the README tests read them (importable as ``readme_blocks``).

A fenced block is *run* by ``tests/test_readme.py`` when its language is ``python`` or
``bash``; other fences (``mermaid``, sample output without a language) are not code. An
HTML comment on the line just above a fence changes how it runs:

- ``<!-- readme-test: long-running -->``: the block's commands whose comment says
  ``runs until Ctrl-C`` (servers, workers) are started in the background, given time to
  start (until the ports they name listen, else a grace period; one that exits early
  must exit 0) and stopped when the block ends; its other commands run to completion;
  ``<!-- readme-test: long-running, kept for N blocks -->`` stops them only after the
  next N run blocks, for blocks that use them (a request to a server started above).
- ``<!-- readme-test: skip: <reason> -->``: not run; the reason is required (the test
  suite itself, hosts that only a team has).

Every other ``python``/``bash`` block runs as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
RUN_LANGUAGES = ("python", "bash")

_FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<code>.*?)^```", re.S | re.M)
_MARKER = re.compile(r"<!-- readme-test: (?P<spec>.*?) -->\n\Z")
_KEPT = re.compile(r"^long-running(?:, kept for (?P<n>\d+) blocks?)?$")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, what it says, and how the README test runs it."""

    language: str
    code: str
    line: int  # of the opening fence, 1-based
    section: str  # the ``## `` heading above it
    marker: str | None  # the readme-test comment's text, if any

    @property
    def runs(self) -> bool:
        return self.language in RUN_LANGUAGES and not self.skip_reason

    @property
    def skip_reason(self) -> str | None:
        if self.marker and self.marker.startswith("skip:"):
            return self.marker.removeprefix("skip:").strip()
        return None

    @property
    def long_running(self) -> bool:
        return bool(self.marker and _KEPT.match(self.marker))

    @property
    def kept_for(self) -> int:
        """How many later run blocks the processes it leaves running stay up for."""
        match = _KEPT.match(self.marker or "")
        return int(match.group("n") or 0) if match else 0

    def where(self) -> str:
        return f"README.md line {self.line} ({self.section})"


def blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of the README (or of ``text``), in order."""
    text = README.read_text() if text is None else text
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()]
        headings = re.findall(r"^## (.+)$", before, flags=re.M)
        marker = _MARKER.search(before)
        found.append(
            Block(
                language=match.group("lang"),
                code=match.group("code"),
                line=before.count("\n") + 1,
                section=headings[-1] if headings else "(top)",
                marker=marker.group("spec").strip() if marker else None,
            )
        )
    return found


def python_blocks(text: str) -> list[str]:
    """The code of the ``python`` blocks in ``text`` (a README section), in order."""
    return [b.code for b in blocks(text) if b.language == "python"]


def commands(code: str) -> list[str]:
    """A shell block's commands, one per logical line (``\\`` continuations joined),
    without blank and comment-only lines."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def runs_until_stopped(command: str) -> bool:
    """Whether a shell command's own comment says it keeps running (``# ... runs until Ctrl-C``)."""
    return "until Ctrl-C" in command.partition("#")[2]
