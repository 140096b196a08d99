"""The campaign comparison report: same seeds for every method, pairs with and without QMP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

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
    # The paper's values (paper-curves.json) at 25% and 100% of its budget beside ours.
    assert "| 96.7 | 98.3 |" in (out / "comparison.md").read_text()

    def final(method):
        return mean_over_tasks_iqm(task_columns(out / method / "seed_1")[1][-1:])

    change = 100 * (final("no_sharing_qmp") - final("no_sharing"))
    row = (out / "complementary.md").read_text().splitlines()[2]
    assert row.startswith("| No-Sharing |") and f"{change:+.0f}" in row
    # The Q-switch mixture's evaluation beside the own policy's, for the QMP run only.
    mixture = task_columns(out / "no_sharing_qmp" / "seed_1", prefix="eval_mixture/")[1][-1:]
    cells = {r.split(" | ")[0]: r.split(" | ") for r in table[2:]}
    assert cells["| No-Sharing + QMP"][3] == f"{100 * mean_over_tasks_iqm(mixture):.0f}"
    assert cells["| No-Sharing"][3] == "-"
    assert row.split(" | ")[3] == cells["| No-Sharing + QMP"][3]
    assert load_campaign(campaign_file).methods[0].name == "no_sharing_qmp"
    assert np.isfinite(change)


def test_qswitch_scores_match_a_brute_force_argmax(reference_campaign, tmp_path):
    import json

    import torch

    from qmp_harness.checkpoints import checkpoint_step, load_newest_checkpoint, saved_checkpoints
    from qmp_studies import qswitch_scores

    _, reference = reference_campaign
    run = tmp_path / "run"
    shutil.copytree(reference / "tiny" / "with_qmp" / "seed_1", run)
    qswitch_scores.main([str(run), "--states", "64", "--every-checkpoint"])
    rows = json.loads((run / "qswitch_scores.json").read_text())
    over = json.loads((run / "qswitch_scores_over_training.json").read_text())
    saved = [checkpoint_step(p) for p in saved_checkpoints(run / "checkpoints")]
    assert [r["step"] for r in over] == saved and len(saved) >= 1
    assert over[-1]["median_own_wins"] == float(np.median([r["own_wins"] for r in rows]))
    assert [r["task"] for r in rows][:2] == ["reach-g0-g1-g2", "reach-g0-g1-g3-shifted"]
    assert "own wins" in (run / "qswitch_scores.md").read_text()

    # Task 0 by brute force: each candidate scored one at a time by task 0's first critic.
    _, checkpoint = load_newest_checkpoint(run)
    actor, qf = qswitch_scores.networks_from_checkpoint(checkpoint)
    rb = checkpoint["rb"]
    picks = np.random.default_rng(0).integers(0, rb.num_transitions(), size=64)
    obs = torch.as_tensor(rb.observations[picks, 0], dtype=torch.float32)
    with torch.no_grad():
        scores = []
        for j in range(5):
            relabelled = obs.clone()
            relabelled[:, -5:] = 0.0
            relabelled[:, -5 + j] = 1.0
            scores.append(qf.score(obs, actor.deterministic_act(relabelled))[0][:, 0])
    own_wins = float((torch.stack(scores, 1).argmax(1) == 0).float().mean())
    assert rows[0]["own_wins"] == own_wins
    # "vs random": the best proposal against uniform actions drawn from the separate stream.
    random_actions = torch.as_tensor(
        np.random.default_rng([0, 1]).uniform(-1.0, 1.0, size=(64, 6)), dtype=torch.float32
    )
    with torch.no_grad():
        random_score = qf.score(obs, random_actions)[0][:, 0]
    best = torch.stack(scores, 1).max(1).values
    spread = float(scores[0].std(unbiased=False))
    assert rows[0]["gap_to_random_in_std"] == pytest.approx(
        float((best - random_score).mean()) / spread, rel=1e-4
    )
    assert all(0.0 <= r["own_wins"] <= 1.0 and r["winner_ood_ratio"] > 0 for r in rows)


def test_a_method_added_later_does_not_shrink_the_comparison(reference_campaign, tmp_path):
    _, reference = reference_campaign
    root = tmp_path / "results"
    for source, target in (("with_qmp", "no_sharing_qmp"), ("without_qmp", "no_sharing")):
        shutil.copytree(reference / "tiny" / source, root / "cmp" / target)
    # A framework pair, added to the campaign later, has run seed 1 only.
    for source, target in (
        ("with_qmp", "parameter_sharing_qmp"),
        ("without_qmp", "parameter_sharing"),
    ):
        shutil.copytree(reference / "tiny" / source / "seed_1", root / "cmp" / target / "seed_1")
    campaign_file = tmp_path / "cmp.toml"
    late = "".join(
        f'\n[[methods]]\nname = "{name}"\nscript = "mtsac_qmp.py"\n'
        for name in ("parameter_sharing_qmp", "parameter_sharing")
    )
    campaign_file.write_text(CAMPAIGN + late)
    main([str(campaign_file), "--root", str(root), "--last", "1"])
    table = (root / "cmp" / "comparison.md").read_text().splitlines()
    assert len(table) == 4 and all("| 2 |" in row for row in table[2:])  # seeds 1 and 2
    assert "Parameter-Sharing" not in "".join(table)

    # partial.md: the late pair beside every complete method on seed 1, with the paper's values
    # and the mixture as in comparison.md, and the pair's QMP change.
    methods_table, pair_table = (root / "cmp" / "partial.md").read_text().split("\n\n")[1:3]
    rows = [row.split(" | ") for row in methods_table.splitlines()[2:]]
    assert [row[0] for row in rows] == [
        "| **Parameter-Sharing + QMP** (not yet on every seed)",
        "| **Parameter-Sharing** (not yet on every seed)",
        *sorted(["| No-Sharing + QMP", "| No-Sharing"], key=lambda name: -final_of(rows, name)),
    ]
    assert all(row[1] == "1" for row in rows)
    assert rows[0][4:] == ["68.4", "82.5 |"] and rows[1][3:] == ["-", "50.2", "46.5 |"]
    mixture = task_columns(
        root / "cmp" / "parameter_sharing_qmp" / "seed_1", prefix="eval_mixture/"
    )
    assert rows[0][3] == f"{100 * mean_over_tasks_iqm(mixture[1][-1:]):.0f}"
    (pair,) = [row.split(" | ") for row in pair_table.splitlines()[2:]]
    assert pair[:2] == ["| 1", "Parameter-Sharing"] and pair[-2:] == [
        "50.2 -> 68.4",
        "46.5 -> 82.5 |",
    ]
    change = int(rows[0][2].split()[0]) - int(rows[1][2].split()[0])
    assert abs(int(pair[5]) - change) <= 1  # the difference of the rounded finals, +-rounding
    assert (root / "cmp" / "partial_seeds_1.png").stat().st_size > 10_000

    # Once the pair has every seed it joins the campaign's tables; no stale same-seed report.
    for source, target in (
        ("with_qmp", "parameter_sharing_qmp"),
        ("without_qmp", "parameter_sharing"),
    ):
        shutil.copytree(reference / "tiny" / source / "seed_2", root / "cmp" / target / "seed_2")
    main([str(campaign_file), "--root", str(root), "--last", "1"])
    assert "| Parameter-Sharing | 2 |" in (root / "cmp" / "comparison.md").read_text()
    assert not list((root / "cmp").glob("partial*"))


def final_of(rows: list[list[str]], name: str) -> int:
    return int(next(row for row in rows if row[0] == name)[2].split()[0])


SHARED_CURVES = Path(__file__).resolve().parents[3] / "shared" / "spec" / "paper-curves.json"


@pytest.mark.skipif(not SHARED_CURVES.is_file(), reason="needs ../shared/spec/paper-curves.json")
def test_paper_values_are_the_shared_curves():
    """The paper's numbers carried over into comparison.py equal the reference file's."""
    from qmp_experiments.comparison import PAPER_BUDGETS, PAPER_CURVES

    data = json.loads(SHARED_CURVES.read_text())
    suites = {
        "Multistage Reacher": "qmp/MultistageReacher-v0",
        "Maze Navigation": "qmp/MazeLarge10-v0",
        "Meta-World CDS": "qmp/MetaWorldCDS-v0",
        "Kitchen": "qmp/KitchenMTEasy-v0",
        "Meta-World MT10": "qmp/MetaWorldMT10-v0",
        "Meta-World MT50": "qmp/MetaWorldMT50-v0",
    }
    methods = {
        "No-Sharing + QMP": "no_sharing_qmp",
        "No-Sharing": "no_sharing",
        "Data-Sharing + QMP": "data_sharing_qmp",
        "Data-Sharing": "data_sharing",
        "Parameter-Sharing + QMP": "parameter_sharing_qmp",
        "Parameter-Sharing": "parameter_sharing",
    }
    for suite, env_id in suites.items():
        assert PAPER_BUDGETS[env_id] == data["budgets_env_steps"][suite]
        for name, curve in data["complementary"][suite].items():
            expected = (curve["at25"], curve["at50"], curve["final"])
            assert PAPER_CURVES[env_id][methods[name]] == expected, (suite, name)


def test_nothing_to_compare_says_why(reference_campaign, tmp_path):
    _, reference = reference_campaign
    campaign_file = tmp_path / "cmp.toml"
    campaign_file.write_text(CAMPAIGN)
    root = tmp_path / "results"
    # A --root that holds none of the campaign's runs is named, not read as runs still to come.
    with pytest.raises(SystemExit, match=r"no run folder under .*cmp.*pass the --root"):
        main([str(campaign_file), "--root", str(root)])
    assert not (root / "cmp" / "comparison.md").exists()
    # Runs started but no seed finished by both methods: how many each has, and where to look.
    shutil.copytree(reference / "tiny" / "with_qmp", root / "cmp" / "no_sharing_qmp")
    shutil.copytree(reference / "tiny" / "without_qmp", root / "cmp" / "no_sharing")
    for seed in (1, 2):  # still running
        (root / "cmp" / "no_sharing" / f"seed_{seed}" / "timing.json").unlink()
    with pytest.raises(
        SystemExit, match=r"finished runs: no_sharing_qmp 2, no_sharing 0\).*--status"
    ):
        main([str(campaign_file), "--root", str(root), "--last", "1"])
    assert not (root / "cmp" / "comparison.md").exists()
