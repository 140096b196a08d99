"""The index of a results folder: per campaign file, its run folders, the command that made each
and the commit(s) of the code that ran it, read from each run's ``provenance.jsonl``.

Written by the driver (``python -m qmp_experiments.sweep <campaign>``, also with
``--report-only``) as ``<root>/INDEX.md``; a folder under the root that no campaign file names
(results kept from an older schedule, say) is listed at the end.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from qmp_experiments.campaign import SCRIPTS_DIR, Campaign, Run, bundled_campaigns, load_campaign
from qmp_harness.run_files import atomic_write_text, files_of_a_run

INDEX_NAME = "INDEX.md"
#: How many characters of a commit the index shows (enough for ``git show``).
COMMIT_CHARS = 12


@dataclass(frozen=True)
class IndexedRun:
    """One run folder as the index shows it."""

    folder: str
    command: str
    commits: tuple[str, ...]  # in the order the run's segments ran; "+" marks uncommitted changes


def code_label(record: dict) -> str:
    """A provenance record's code: its commit, else (code run outside a git checkout) its
    source digest as ``src:<hex>``, else ``no commit``."""
    if record["git_commit"] is not None:
        return str(record["git_commit"])[:COMMIT_CHARS]
    digest = record.get("source_digest")
    return f"src:{digest.removeprefix('sha256:')[:COMMIT_CHARS]}" if digest else "no commit"


def run_commits(run_dir: Path) -> tuple[str, ...]:
    """The commits a run's segments ran at (a resume adds a segment), each once, in order;
    ``<commit>+`` where the tree had uncommitted changes, ``src:<digest>`` for a segment run
    outside a git checkout, ``?`` for a line that is not a provenance record. Empty when the
    run wrote no provenance."""
    path = run_dir / "provenance.jsonl"
    if not path.is_file():
        return ()
    commits: list[str] = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            commit = code_label(record)
        except (ValueError, KeyError, TypeError, AttributeError):
            commit = "?"
        else:
            commit += "+" if record.get("uncommitted_changes") else ""
        if commit not in commits:
            commits.append(commit)
    return tuple(commits)


def portable_command(campaign: Campaign, run: Run, root: Path) -> str:
    """The command that makes ``run`` from a checkout of this repository, as the driver runs
    it: ``python cleanrl_qmp/<script>.py ... --run-dir <root>/<folder>``."""
    command = campaign.fresh_command(run, root / run.folder)
    script = Path(command[1])
    if script.parent == SCRIPTS_DIR:
        script = Path(SCRIPTS_DIR.name) / script.name
    return shlex.join(["python", str(script), *command[2:]])


def indexed_runs(campaign: Campaign, root: Path) -> list[IndexedRun]:
    """The campaign's runs that wrote files under ``root``, in the campaign's order."""
    return [
        IndexedRun(
            run.folder, portable_command(campaign, run, root), run_commits(root / run.folder)
        )
        for run in campaign.runs()
        if files_of_a_run(root / run.folder)
    ]


def campaign_section(campaign: Campaign, root: Path) -> list[str]:
    runs = indexed_runs(campaign, root)
    source = campaign.source.name if campaign.source is not None else campaign.name
    lines = [
        f"## `{campaign.name}`",
        "",
        f"Campaign file `{source}`: {len(runs)} of {len(campaign.runs())} runs have files.",
        "",
        "| run folder | commit | command |",
        "|---|---|---|",
    ]
    for run in runs:
        commits = ", ".join(f"`{c}`" for c in run.commits) or "(no provenance)"
        lines.append(f"| `{run.folder}` | {commits} | `{run.command}` |")
    return [*lines, ""]


def results_index(root: Path, campaigns: list[Campaign]) -> str:
    """The index's Markdown: a section per campaign with a folder under ``root``, then the
    folders that no campaign names."""
    shown = [c for c in campaigns if (root / c.name).is_dir()]
    lines = [
        "# Results index",
        "",
        "Written by `python -m qmp_experiments.sweep <campaign>` (also with `--report-only`): per",
        "campaign file, its run folders, the commit(s) each run ran at (from its",
        "`provenance.jsonl`; a resumed run lists each commit once, `+` marks uncommitted",
        "changes, `src:` gives the source digest of code run outside a git checkout) and the",
        "command that makes it from a checkout of that commit.",
        "",
    ]
    for campaign in shown:
        lines += campaign_section(campaign, root)
    named = {c.name for c in shown}
    others = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in named)
    if others:
        lines += ["## Folders no campaign file names", ""]
        lines += [f"- `{name}/`" for name in others] + [""]
    return "\n".join(lines)


def write_results_index(root: Path, campaign: Campaign | None = None) -> Path:
    """Write ``<root>/INDEX.md`` over the bundled campaigns and ``campaign`` (a campaign file
    given by path, indexed in place of a bundled one of the same name); returns its path."""
    campaigns = {name: load_campaign(name) for name in bundled_campaigns()}
    if campaign is not None:
        campaigns[campaign.name] = campaign
    Path(root).mkdir(parents=True, exist_ok=True)
    path = Path(root) / INDEX_NAME
    atomic_write_text(path, results_index(Path(root), sorted(campaigns.values(), key=_name)))
    return path


def _name(campaign: Campaign) -> str:
    return campaign.name
