"""The campaign comparison report: same seeds for every method, pairs with and without QMP."""

from __future__ import annotations

import shutil

import numpy as np

from qmp_experiments.aggregate import mean_over_tasks_iqm, task_columns
from qmp_experiments.campaign import load_campaign
from qmp_experiments.comparison import main

CAMPAIGN = """
env_ids = ["qmp/MultistageReacher-v0"]
total_timesteps = 600
seeds = [1, 2]
checkpoint_every = 300

[[methods]]
name = "no_sharing_qmp"
script = "sac_qmp.py"
flags = ["--qmp"]

[[methods]]
name = "no_sharing"
script = "sac_qmp.py"
flags = ["--no-qmp"]
"""


def test_comparison_uses_common_seeds_and_pairs_methods(reference_campaign, tmp_path):
    _, reference = reference_campaign
    root = tmp_path / "results"
    for source, target in (("with_qmp", "no_sharing_qmp"), ("without_qmp", "no_sharing")):
        shutil.copytree(reference / "tiny" / source, root / "cmp" / target)
    (root / "cmp" / "no_sharing" / "seed_2" / "timing.json").unlink()  # seed 2 unfinished
    campaign_file = tmp_path / "cmp.toml"
    campaign_file.write_text(CAMPAIGN)
    main([str(campaign_file), "--root", str(root), "--last", "1"])

    out = root / "cmp"
    assert (out / "comparison.png").stat().st_size > 10_000
    table = (out / "comparison.md").read_text().splitlines()
    assert len(table) == 4 and all("| 1 |" in row for row in table[2:])  # seed 1 only
    assert "~98-100" in (out / "comparison.md").read_text()  # the paper's value beside ours

    def final(method):
        return mean_over_tasks_iqm(task_columns(out / method / "seed_1")[1][-1:])

    change = 100 * (final("no_sharing_qmp") - final("no_sharing"))
    row = (out / "complementary.md").read_text().splitlines()[2]
    assert row.startswith("| No-Sharing |") and f"{change:+.0f}" in row
    assert load_campaign(campaign_file).methods[0].name == "no_sharing_qmp"
    assert np.isfinite(change)
