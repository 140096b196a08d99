"""The README's usage example runs as written and does what it says."""

import re
from pathlib import Path

from qmp_experiments.readme import COPY_BLOCK

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_usage_example_runs(capsys):
    text = README.read_text()
    block = re.search(r"tests/test_readme.py runs this block -->\n```python\n(.*?)```", text, re.S)
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


def test_readme_result_tables_are_the_committed_outputs():
    """Every table the README copies from results/ is byte for byte the file a command wrote."""
    text = README.read_text()
    copies = [(m.group(2), m.group(3)) for m in COPY_BLOCK.finditer(text)]
    assert copies, "the README copies no result table"
    for relative_path, block in copies:
        source = README.parent / relative_path
        assert source.is_file(), f"README copies {relative_path}, which does not exist"
        assert block == source.read_text(), f"README's copy of {relative_path} is stale"
