"""Sphinx configuration of the qmp-toolkit documentation (``make docs``).

Pages are Markdown (MyST). Result pages include the committed files under ``results/``
directly, so a table exists once, where the command that made it wrote it. The local
extension ``_ext/qmp_docs.py`` writes the tables that are facts of the code (suite facts,
presets, each script's flags) and the task pictures of each suite page.
"""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(ROOT), str(DOCS), str(DOCS / "_ext")]

project = "qmp-toolkit"
author = "qmp-toolkit contributors"
copyright = "2026, qmp-toolkit contributors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "qmp_docs",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
# The two failure-mode parts are included by failure_modes.md, not pages of their own.
exclude_patterns = ["_build", "failure_modes/*.md", "README*"]
templates_path: list[str] = []

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = "qmp-toolkit"
html_static_path = ["_static"]
html_css_files = ["qmp.css"]
html_show_sourcelink = False

# API reference: the docstrings as they are (Google style, "Args:" sections).
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
# Methods we override without a docstring (step, reset, ...) would otherwise show Gymnasium's
# docstrings, written for Gymnasium's own site (their cross-references do not resolve here).
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "Attributes:" sections as fields of their class, not as entries that duplicate the
# dataclass fields autodoc lists.
napoleon_use_ivar = True

# Nitpicky: every cross-reference to our own code must resolve. References into the
# libraries we build on (numpy, torch, Gymnasium, ...) have no inventory offline (CI has no
# network beyond the package registries), so they are not checked.
nitpicky = True
_EXTERNAL = (
    r"(np|numpy|npt|torch|nn|gym|gymnasium|mujoco|stable_baselines3|sb3|pettingzoo|ray|tyro"
    r"|tensordict|torchrl|matplotlib|PIL|pathlib|collections|typing|typing_extensions"
    r"|concurrent|subprocess|dataclasses|enum|abc|types|io|os|re|json|pickle|zipfile|argparse"
    r"|logging|threading|multiprocessing|contextlib|metaworld|gymnasium_robotics)(\..*)?"
)
_BUILTINS = "(" + "|".join(n for n in dir(builtins) if not n.startswith("_")) + ")"
nitpick_ignore_regex = [
    (r"py:(class|obj|data|exc|func|meth|attr|mod)", _EXTERNAL),
    # Builtins and typing names as written in signatures; library classes named by their short
    # name in string annotations (``from __future__ import annotations``); our type variables.
    (
        r"py:(class|obj)",
        r"(Any|Callable|Sequence|Mapping|Iterable|Iterator|Literal|Self|TypeVar|Generic"
        r"|Protocol|AutoresetMode|VectorEnv|VecEnv|Module|Path|ActType|ObsType)",
    ),
    (r"py:(class|obj)", r"(\w+\.)*(ArgsT|T)"),
    # Builtins (``:raises ValueError:`` from a "Raises:" section, ``list`` in a "Returns:"
    # type) and the words docstrings put in types ("int, optional", "array-like").
    (r"py:(class|obj|exc|func|data)", _BUILTINS),
    (r"py:(class|obj)", r"(optional|callable|array-like|array_like|sequence|iterable|mapping)"),
    # Private helpers that docstrings name for the reader of the source: not API.
    (r"py:(class|meth|func|attr)", r"_\w+"),
]


# -- docstring conventions of this code base ------------------------------------------------
# Two habits of the docstrings are not reStructuredText, and are translated here rather than
# by editing the modules:
# 1. Attribute and property docstrings start "What it is: more" (e.g. "Counts: rows are ...");
#    napoleon would read the text before the colon as a type. They bypass napoleon.
# 2. A paragraph that ends with ":" followed by an indented block shows code (the harness's
#    usage sketch); reStructuredText needs "::" for that, or it reports bad indentation.
_ATTRIBUTE_KINDS = {"attribute", "data", "property"}
_stashed_docstrings: dict[str, list[str]] = {}


def _stash_attribute_docstring(app, what, name, obj, options, lines) -> None:
    if what in _ATTRIBUTE_KINDS:
        _stashed_docstrings[name] = list(lines)


def _restore_attribute_docstring(app, what, name, obj, options, lines) -> None:
    if what in _ATTRIBUTE_KINDS and name in _stashed_docstrings:
        lines[:] = _stashed_docstrings.pop(name)


def _colon_blocks_as_code(app, what, name, obj, options, lines) -> None:
    for i in range(len(lines) - 2):
        line, blank, block = lines[i].rstrip(), lines[i + 1], lines[i + 2]
        indent = len(line) - len(line.lstrip())
        if (
            line.endswith(":")
            and not line.endswith("::")
            and not line.lstrip().startswith((":", ".."))
            and not blank.strip()
            and len(block) - len(block.lstrip()) > indent
        ):
            lines[i] = line + ":"


def setup(app) -> None:
    # Napoleon converts docstrings at the default priority, 500.
    app.connect("autodoc-process-docstring", _stash_attribute_docstring, priority=499)
    app.connect("autodoc-process-docstring", _restore_attribute_docstring, priority=501)
    app.connect("autodoc-process-docstring", _colon_blocks_as_code, priority=600)
