"""Directives that write the docs' facts from the code, so no page repeats them by hand.

- ``suite-facts ID [ID ...]``: ids, tasks, observation and action layout, horizon and
  evaluation constants, read from ``qmp_envs.SUITES``.
- ``task-gallery ID``: the picture of every task of a suite (``docs/render_tasks.py`` renders
  them from our own envs); a missing picture fails the build with the command that makes it.
  A committed GIF of a trained policy on a task is shown beside its picture.
- ``script-flags MODULE``: a training script's flags (name, type, default, help) read from its
  ``Args`` dataclass and the attribute docstrings tyro also reads; ``:shared:`` lists the flags
  every script has (``BaseArgs``), the default lists the script's own.
- ``presets``: the paper's hyperparameters per environment (``qmp_harness.config.PRESETS``).
- ``campaign-files FOLDER``: every table and figure of a ``results/`` folder that the page does
  not already show, included from the files (collapsed).
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
import textwrap
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

import render_tasks
from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

TASKS_FOLDER = "_static/tasks"
POLICIES_FOLDER = "_static/policies"


# -- tables --------------------------------------------------------------------------------
def cell(value: Any) -> nodes.entry:
    """A table cell; text between backticks is set as code."""
    paragraph = nodes.paragraph()
    for k, piece in enumerate(str(value).split("`")):
        if piece:
            paragraph += nodes.literal(piece, piece) if k % 2 else nodes.Text(piece)
    return nodes.entry("", paragraph)


def table(
    headers: list[str] | None, rows: list[list[Any]], classes: tuple[str, ...] = ()
) -> nodes.table:
    """A docutils table, with a header row unless ``headers`` is None."""
    columns = len(headers) if headers else len(rows[0])
    group = nodes.tgroup(cols=columns)
    group += [nodes.colspec(colwidth=1) for _ in range(columns)]
    if headers:
        head = nodes.thead()
        head += nodes.row("", *[cell(h) for h in headers])
        group += head
    body = nodes.tbody()
    body += [nodes.row("", *[cell(v) for v in row]) for row in rows]
    group += body
    return nodes.table("", group, classes=["qmp-table", *classes])


# -- suites --------------------------------------------------------------------------------
def suite_rows(env_id: str) -> list[list[Any]]:
    import qmp_envs

    facts = qmp_envs.suite_facts(env_id)
    hidden = (
        f"; the paper's agents did not see features {list(facts.hidden_features)}"
        if facts.hidden_features
        else ""
    )
    options = ["`task=k`", "`task_schedule`"]
    if facts.has_compat:
        options.append('`compat="official" | "fixed"`')
    if facts.has_eval_split:
        options.append('`seed=S`, `split="train" | "eval"`')
    return [
        ["id", f"`{env_id}`"],
        ["tasks", f"{facts.num_tasks}: " + ", ".join(f"`{t}`" for t in facts.task_names)],
        [
            "observation",
            f"`Box(float32, ({facts.observation_dim},))`: {facts.feature_dim} features, then the "
            f"one-hot task id ({facts.num_tasks}){hidden}",
        ],
        ["action", f"`Box(-1, 1, ({facts.action_dim},))`"],
        ["horizon", f"{facts.max_episode_steps} steps"],
        [
            "evaluation",
            f"{facts.eval_episodes} episodes per task, each task's own deterministic policy"
            + (", on the evaluation goals" if facts.has_eval_split else "")
            + "; an episode succeeds if `success` was set at any step",
        ],
        ["UDS relabelling reward (`min_reward`)", facts.min_reward],
        ["keyword arguments", ", ".join(options)],
    ]


class SuiteFacts(SphinxDirective):
    """Facts of one or more suites, one two-column table each."""

    required_arguments = 1
    final_argument_whitespace = True

    def run(self) -> list[nodes.Node]:
        import qmp_envs

        result: list[nodes.Node] = []
        for env_id in self.arguments[0].split():
            if env_id not in qmp_envs.SUITES:
                raise self.error(f"unknown suite {env_id!r}; known: {', '.join(qmp_envs.SUITES)}")
            result.append(table(None, suite_rows(env_id), ("qmp-facts",)))
        return result


def task_figure(uri: str, caption_text: str) -> nodes.figure:
    figure = nodes.figure(classes=["qmp-task"])
    figure += nodes.image(uri=uri, alt=caption_text)
    figure += nodes.caption(caption_text, "", nodes.literal(caption_text, caption_text))
    return figure


class TaskGallery(SphinxDirective):
    """Every rendered task picture of a suite, captioned with its index and name, each followed
    by the GIF of a trained policy on that task where one is committed
    (``docs/_static/policies/<suite>/<task name>.gif``, as ``--capture-video`` names them)."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        import qmp_envs

        env_id = self.arguments[0]
        if env_id not in qmp_envs.SUITES:
            raise self.error(f"unknown suite {env_id!r}; known: {', '.join(qmp_envs.SUITES)}")
        names = qmp_envs.suite_facts(env_id).task_names
        gallery = nodes.container(classes=["qmp-gallery"])
        # A folder is never "a file" to Sphinx's dependency check, so the suite pages are re-read
        # on every build (about a second): a GIF added later then shows without a clean build.
        policies = Path(self.env.srcdir) / POLICIES_FOLDER / render_tasks.suite_folder(env_id)
        self.env.note_dependency(str(policies))
        missing = []
        for task in render_tasks.rendered_tasks(env_id):
            relative = render_tasks.task_picture_path(env_id, task)
            if not (Path(self.env.srcdir) / TASKS_FOLDER / relative).is_file():
                missing.append(str(relative))
                continue
            name = names[task]
            gallery += task_figure(f"/{TASKS_FOLDER}/{relative.as_posix()}", f"{task}: {name}")
            policy = Path(POLICIES_FOLDER) / render_tasks.suite_folder(env_id) / f"{name}.gif"
            if (Path(self.env.srcdir) / policy).is_file():
                gallery += task_figure(f"/{policy.as_posix()}", f"{task}: trained policy")
        if missing:
            raise self.error(
                f"task pictures missing for {env_id}: {missing}; render them with "
                f"MUJOCO_GL=egl python docs/render_tasks.py --suites {env_id}"
            )
        return [gallery]


# -- scripts -------------------------------------------------------------------------------
def attribute_docstrings(cls: type) -> dict[str, str]:
    """``{field: docstring}`` for the string literals that follow fields in a class body
    (the convention CleanRL and tyro use), over the class and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not hasattr(klass, "__dataclass_fields__"):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for statement, following in zip(body, body[1:], strict=False):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def flag_default(field: Field) -> str:
    if field.default is not MISSING:
        value = field.default
    elif field.default_factory is not MISSING:
        value = field.default_factory()
    else:
        return "required"
    if value is None:
        return "preset" if field.name in preset_fields() else "None"
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "(none)"
    return f"`{value}`"


def flag_name(field: Field) -> str:
    name = field.name.replace("_", "-")
    return f"`--{name}` / `--no-{name}`" if field.type in ("bool", bool) else f"`--{name}`"


def defining_class(cls: type, name: str) -> type:
    """The class in ``cls``'s bases that last (re)declares field ``name``."""
    for klass in cls.__mro__:
        if name in vars(klass).get("__annotations__", {}):
            return klass
    return cls


@functools.cache
def preset_fields() -> frozenset[str]:
    """Flags whose ``None`` default means "the env's preset" (``qmp_harness.config.Preset``)."""
    from qmp_harness.config import Preset

    return frozenset(f.name for f in fields(Preset))


class ScriptFlags(SphinxDirective):
    """The flags of a training script's ``Args`` (own ones, or with ``:shared:`` the common)."""

    required_arguments = 1
    option_spec = {"shared": directives.flag}

    def run(self) -> list[nodes.Node]:
        from qmp_harness.config import BaseArgs

        try:
            module = importlib.import_module(self.arguments[0])
        except ImportError as error:
            raise self.error(f"cannot import {self.arguments[0]}: {error}") from error
        args_type = getattr(module, "Args", BaseArgs)
        docs = attribute_docstrings(args_type)
        shared = "shared" in self.options
        rows = []
        for field in fields(args_type):
            own = defining_class(args_type, field.name) is not BaseArgs
            if own == shared:
                continue
            rows.append([flag_name(field), f"`{field.type}`", flag_default(field),
                         docs.get(field.name, "")])  # fmt: skip
        if not rows:
            return [nodes.paragraph(text="No flags of its own: it has the shared flags only.")]
        return [table(["flag", "type", "default", "what it does"], rows, ("qmp-flags",))]


class Presets(SphinxDirective):
    """The per-environment preset of every flag left unset (``qmp_harness.config.PRESETS``)."""

    def run(self) -> list[nodes.Node]:
        from qmp_harness.config import PRESETS, Preset

        names = [f.name for f in fields(Preset)]
        rows = [
            [f"`{env_id}`", *[self.show(getattr(p, n)) for n in names]]
            for env_id, p in PRESETS.items()
        ]
        headers = ["env id", *[f"`--{n.replace('_', '-')}`" for n in names]]
        return [table(headers, rows, ("qmp-presets",))]

    @staticmethod
    def show(value: Any) -> str:
        if isinstance(value, tuple):
            return "x".join(map(str, value))
        if isinstance(value, float) and not value.is_integer() and value < 1e-2:
            return f"{value:g}"
        if isinstance(value, float):
            return f"{value:.3g}"
        return f"{value:,}"


# -- campaign folders ----------------------------------------------------------------------
SHOWN_FILE = re.compile(r"```\{(?:include|figure|image)\} (\S+)|!\[[^\]]*\]\(([^)\s]+)\)")


def shown_files(page: Path) -> set[Path]:
    """The files a Markdown page includes or shows as images (not those it only names)."""
    return {
        (page.parent / (include or image)).resolve()
        for include, image in SHOWN_FILE.findall(page.read_text())
    }


class CampaignFiles(SphinxDirective):
    """Every table and figure of a ``results/`` folder that the page does not already show,
    included from the files (collapsed), so a results page carries its whole campaign."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        root = Path(self.env.srcdir).parent
        folder = root / self.arguments[0]
        if not folder.is_dir():
            raise self.error(f"no results folder {self.arguments[0]}")
        page = Path(self.env.doc2path(self.env.docname))
        shown = shown_files(page)
        up = Path(*[".."] * len(page.parent.relative_to(root).parts))
        tables = sorted(folder.rglob("*.md"))
        figures = sorted(folder.glob("*.png"))
        lines = []
        for path in [*tables, *figures]:
            relative = path.relative_to(root).as_posix()
            if path.resolve() in shown:
                continue
            self.env.note_dependency(str(path))
            lines += [f"`{relative}`", ""]
            if path.suffix == ".md":
                lines += [f"```{{include}} {(up / relative).as_posix()}", "```", ""]
            else:
                lines += [f"![{path.stem}]({(up / relative).as_posix()})", ""]
        if not lines:
            return []
        summary = f"Every other table and figure of <code>{self.arguments[0]}/</code>"
        details = nodes.container(classes=["qmp-campaign-files"])
        details += nodes.raw("", f"<details><summary>{summary}</summary>", format="html")
        self.state.nested_parse(StringList(lines, source=str(page)), self.content_offset, details)
        details += nodes.raw("", "</details>", format="html")
        return [details]


# -- re-exported names ----------------------------------------------------------------------
OUR_PACKAGES = ("qmp_envs", "qmp_wrappers", "cleanrl_qmp", "qmp_experiments")


def import_target(target: str) -> Any:
    """The object a dotted name refers to (``qmp_wrappers.QMPBehaviorWrapper.attach``), or None."""
    parts = target.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for name in parts[split:]:
                obj = getattr(obj, name)
        except AttributeError:
            return None
        return obj
    return None


def resolve_reexport(
    app: Sphinx, env: Any, node: nodes.Element, contnode: nodes.Element
) -> nodes.Element | None:
    """Resolve ``qmp_wrappers.QMPBehaviorWrapper`` (a re-export, as docstrings write it) to the
    place the API reference documents it, ``qmp_wrappers.behavior.QMPBehaviorWrapper``; and a
    method named inside a class's docstring (``:meth:`attach```) that the class inherits."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target.startswith(OUR_PACKAGES) and node.get("py:class"):
        target = f"{node.get('py:module')}.{node['py:class']}.{target}"
    if not target.startswith(OUR_PACKAGES):
        return None
    obj = import_target(target)
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if module is None or qualname is None or f"{module}.{qualname}" == target:
        return None
    return env.get_domain("py").resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], f"{module}.{qualname}", node, contnode
    )


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("missing-reference", resolve_reexport)
    app.add_directive("suite-facts", SuiteFacts)
    app.add_directive("task-gallery", TaskGallery)
    app.add_directive("script-flags", ScriptFlags)
    app.add_directive("presets", Presets)
    app.add_directive("campaign-files", CampaignFiles)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
