"""The docs site's promises that hold without building it: a page and a picture of every task for
every suite, flag tables that miss no flag, and the picture script's cropping."""

import importlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import qmp_envs

DOCS = Path(__file__).resolve().parents[2] / "docs"
sys.path[:0] = [str(DOCS), str(DOCS / "_ext")]

import qmp_docs  # noqa: E402
import render_tasks  # noqa: E402

SCRIPTS = ["sac_qmp", "mtsac_qmp", "uds_qmp", "dnc_sac", "ctpg_sac"]


def directive_arguments(name: str) -> list[str]:
    pages = (page.read_text() for page in DOCS.rglob("*.md") if "_build" not in page.parts)
    return [arg for text in pages for arg in re.findall(rf"```\{{{name}\}} (.+)", text)]


@pytest.mark.parametrize("env_id", sorted(qmp_envs.SUITES))
def test_every_suite_has_a_page_with_a_picture_of_each_task(env_id):
    assert env_id in directive_arguments("task-gallery"), f"no page shows {env_id}'s tasks"
    assert any(env_id in arg.split() for arg in directive_arguments("suite-facts"))
    tasks = render_tasks.rendered_tasks(env_id)
    assert tasks == list(range(qmp_envs.SUITES[env_id].num_tasks)) or env_id.endswith("MT50-v0")
    for task in tasks:
        picture = DOCS / "_static" / "tasks" / render_tasks.task_picture_path(env_id, task)
        assert picture.is_file(), f"{picture} missing: run docs/render_tasks.py --suites {env_id}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_has_a_page_whose_flag_table_misses_no_flag(script):
    from dataclasses import fields

    assert f"cleanrl_qmp.{script}" in directive_arguments("script-flags")
    args_type = importlib.import_module(f"cleanrl_qmp.{script}").Args
    docs = qmp_docs.attribute_docstrings(args_type)
    undocumented = [f.name for f in fields(args_type) if not docs.get(f.name)]
    assert not undocumented, f"{script}: flags without a help text: {undocumented}"
    assert docs["exp_name"] == "the name of this experiment (part of the run folder's name)"


def test_attribute_docstrings_take_the_subclass_override():
    from dataclasses import dataclass

    @dataclass
    class Base:
        size: int = 1
        """the base's help"""

    @dataclass
    class Child(Base):
        size: int = 2
        """the child's help"""

    assert qmp_docs.attribute_docstrings(Child) == {"size": "the child's help"}


def test_trim_background_cuts_the_uniform_border_only():
    frame = np.full((10, 12, 3), 255, dtype=np.uint8)
    frame[2:7, 3:9] = (10, 20, 30)
    frame[4, 5] = (200, 0, 0)
    trimmed = render_tasks.trim_background(frame)
    assert trimmed.shape == (5, 6, 3)
    assert (trimmed[2, 2] == (200, 0, 0)).all()


def test_an_included_file_with_a_title_is_shifted_under_its_section():
    """A results file that opens with its own '# ' title, included as it is, becomes a second
    page title, which the Results navigation lists as a page of its own: such an include needs
    ``:heading-offset:``."""
    unshifted = []
    for page in DOCS.rglob("*.md"):
        if "_build" in page.parts:
            continue
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            match = re.match(r"```\{include\} (\S+\.md)", line)
            if not match:
                continue
            included = (page.parent / match.group(1)).resolve()
            titled = re.search(r"^# ", included.read_text(), re.M)
            shifted = i + 1 < len(lines) and lines[i + 1].startswith(":heading-offset:")
            if titled and not shifted:
                unshifted.append(f"{page.relative_to(DOCS)}:{i + 1} {match.group(1)}")
    assert not unshifted, f"includes of titled files without :heading-offset: {unshifted}"


def test_no_wrapped_line_starts_a_block_quote():
    """A list item or paragraph wrapped so that its next line begins with '>' (``>= 0``) is
    rendered as a block quote, cutting the sentence in two: such a line needs rewrapping."""
    quoted = []
    pages = [p for p in DOCS.rglob("*.md") if "_build" not in p.parts]
    for page in [*pages, DOCS.parent / "README.md"]:
        in_fence = False
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.lstrip().startswith("```"):
                in_fence = not in_fence
            elif not in_fence and line.lstrip().startswith(">") and i and lines[i - 1].strip():
                quoted.append(f"{page.name}:{i + 1}: {line.strip()[:40]}")
    assert not quoted, f"lines that continue a sentence but start a block quote: {quoted}"
