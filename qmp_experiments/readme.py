"""Keep the README's result tables equal to the files the commands wrote."""

from __future__ import annotations

import re
from pathlib import Path

from cleanrl_qmp.run_files import atomic_write_text

COPY_BLOCK = re.compile(r"(<!-- copied from (\S+) -->\n)(.*?)(<!-- end of copy -->)", re.S)


def refresh_readme_copies(readme: Path) -> list[str]:
    """Replace every ``<!-- copied from PATH -->`` block of ``readme`` by PATH's current text.

    PATH is relative to the README's folder. Returns the paths copied; a missing file is an
    error rather than a stale table. The README is rewritten atomically.
    """
    text = readme.read_text()
    copied = []

    def fill(match: re.Match) -> str:
        source = readme.parent / match.group(2)
        if not source.is_file():
            raise FileNotFoundError(f"{readme} copies {match.group(2)}, which does not exist")
        copied.append(match.group(2))
        return match.group(1) + source.read_text() + match.group(4)

    atomic_write_text(readme, COPY_BLOCK.sub(fill, text))
    return copied
