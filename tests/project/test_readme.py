"""The README is a front page: its usage example runs as written, its one result table is the
committed file, and every result lives on the docs' result pages, included, never copied."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# The README's one result: this figure and the table the same command wrote.
FRONT_TABLE = "results/reacher/comparison.md"
FRONT_FIGURE = "results/reacher/comparison.png"


def test_readme_usage_example_runs(capsys):
    text = README.read_text()
    block = re.search(
        r"tests/project/test_readme.py runs this block -->\n```python\n(.*?)```", text, re.S
    )
    assert block, "the README's usage block is missing"
    assert len(block.group(1).strip().splitlines()) <= 22
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    executed, actions = namespace["executed"], namespace["actions"]
    assert executed.shape == actions.shape == (5, 6)
    assert namespace["chosen"].tolist() == [2] * 5  # the toys do not tie: task 2's proposal wins
    assert namespace["envs"].selection_counts.sum() == 5
    assert "[[" in capsys.readouterr().out


def test_readme_names_the_two_commands_and_ci_runs_the_test_command():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_is_a_front_page_with_one_result():
    text = README.read_text()
    assert len(text.splitlines()) <= 250, "the README is a front page; move details to docs/"
    tables = [line for line in text.splitlines() if re.match(r"\|\s*-+\s*\|", line)]
    assert len(tables) == 2, "the README has its contents table and ONE result table"
    assert (ROOT / FRONT_TABLE).read_text() in text, f"the README's table is not {FRONT_TABLE}"
    assert f"]({FRONT_FIGURE})" in text
    assert "<!-- copied from" not in text, "results are included by docs/results, not copied"


def test_readme_links_into_the_docs_resolve():
    links = re.findall(r"\]\(((?:docs|results)/[^)#]+)\)", README.read_text())
    assert any(link.startswith("docs/") for link in links)
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, f"the README links to files that do not exist: {missing}"


def test_docs_result_pages_include_tables_instead_of_copying_them():
    """A table a command wrote appears in the docs only as an include of its file, and every
    campaign folder under results/ is shown by a results page."""
    pages = sorted((DOCS / "results").glob("*.md"))
    assert pages
    aggregate_header = re.compile(r"^\| env_id \| method \|", re.M)
    shown = set()
    for page in pages:
        text = page.read_text()
        assert not aggregate_header.search(text), f"{page.name} copies a table"
        for path in re.findall(r"```\{include\} (\S+)", text):
            shown.add((page.parent / path).resolve().parent)
        shown.update(
            (ROOT / folder).resolve() for folder in re.findall(r"```\{campaign-files\} (\S+)", text)
        )
    for summary in sorted(ROOT.glob("results/*/summary.md")):
        assert summary.parent.resolve() in shown, f"no results page shows {summary.parent}"
