"""The claim (c) judge: readings at a budget, the README's three claims, the choosing rule."""

import json

import numpy as np
import pytest

from qmp_envs.point_reach import GOAL
from qmp_experiments.campaign import load_campaign
from qmp_studies import pointreach_grid

CAMPAIGN = """
env_ids = ["qmp/PointReach-v1"]
total_timesteps = 40
seeds = [1, 2]
checkpoint_every = 20

[[methods]]
name = "sac"
script = "sac_qmp.py"
flags = ["--no-qmp"]

[[methods]]
name = "qmp_relevant"
script = "sac_qmp.py"
flags = ["--qmp", "--qmp-helpers", "up", "right", "up-right"]

[overrides]
"--env-options" = ["start_bonus=0.01", "start_bonus=0.05"]
"""


def fake_run(run_dir, qmp, reached, windows, success=(0.0, 0.0)):
    """A finished 40-step run: four 10-step episodes (``reached`` says which end in the goal),
    two 20-step selection windows and evaluations at 20 and 40."""
    run_dir.mkdir(parents=True)
    episodes = []
    for hit in reached:
        path = np.linspace([0.5, 0.5], GOAL if hit else [2.0, 2.0], 11)
        episodes.append(path)
    np.savez(
        run_dir / "episodes.npz",
        positions=np.concatenate(episodes),
        splits=np.cumsum([len(e) for e in episodes])[:-1],
    )
    (run_dir / "args.json").write_text(json.dumps({"qmp": qmp}))
    names = ["reach-top-right", "up", "right", "up-right"]
    (run_dir / "selection.jsonl").write_text(
        "".join(
            json.dumps({"global_step": 20 * (i + 1), "names": names, "matrix": [m]}) + "\n"
            for i, m in enumerate(windows)
        )
    )
    (run_dir / "metrics.csv").write_text(
        f"global_step,eval/success_mean\n20,{success[0]}\n40,{success[1]}\n"
    )
    (run_dir / "timing.json").write_text(json.dumps({"env_steps": 40}))


def test_designs_claims_and_choice(tmp_path, capsys):
    path = tmp_path / "grid.toml"
    path.write_text(CAMPAIGN)
    campaign = load_campaign(path)
    root = tmp_path / "results"
    for run in campaign.runs():
        bonus_01 = "0.01" in run.method.name
        folder = root / run.folder
        if run.method.name.startswith("sac"):
            fake_run(folder, False, [False] * 4, [[1, 0, 0, 0]] * 2)
        elif bonus_01:  # up-right the largest helper in both seeds; goal reached 2 of 4
            late = [0.4, 0.1, 0.1, 0.4] if run.seed == 1 else [0.4, 0.05, 0.15, 0.4]
            fake_run(folder, True, [False, True, False, True], [[0.5, 0.2, 0.2, 0.1], late])
        else:  # "right" the largest helper; goal reached 1 of 4
            fake_run(folder, True, [True, False, False, False], [[0.4, 0.1, 0.4, 0.1]] * 2)
    designs = pointreach_grid.read_designs(campaign, root, [20, 40])
    assert sorted(d.label for d in designs) == [
        "start_bonus=0.01 @ 20",
        "start_bonus=0.01 @ 40",
        "start_bonus=0.05 @ 20",
        "start_bonus=0.05 @ 40",
    ]
    first = next(d for d in designs if d.setting == "start_bonus=0.01" and d.budget == 20)
    whole = next(d for d in designs if d.setting == "start_bonus=0.01" and d.budget == 40)
    other = next(d for d in designs if d.setting == "start_bonus=0.05" and d.budget == 40)
    # Within 20 steps only the first two episodes count; shares are the first window's.
    assert first.mean("qmp_reach") == 0.5 and whole.mean("qmp_reach") == 0.5
    assert first.mean_share("up-right") == pytest.approx(0.1)
    assert first.seeds_up_right_largest == 0
    assert whole.mean_share("up-right") == pytest.approx(0.25)
    assert whole.seeds_up_right_largest == 2 and whole.up_right_margin == pytest.approx(
        0.25 - 0.1625
    )
    assert whole.claim_a() and whole.claim_b() and whole.claim_c(seeds_needed=2)
    assert other.claim_a() and other.claim_b() and not other.claim_c(seeds_needed=2)
    assert other.mean("qmp_reach") == 0.25
    assert pointreach_grid.choose(designs)[0] is whole
    pointreach_grid.main(["--root", str(root), str(path), "--budgets", "20", "40", "--choose"])
    report = (root / "grid" / "designs.md").read_text()
    assert "Chosen: **start_bonus=0.01 @ 40**: up-right is the largest helper in 2 of 2" in report
    assert capsys.readouterr().out.strip() == report.strip()
    assert len((root / "grid" / "designs.csv").read_text().splitlines()) == 1 + 4 * 2


def test_claim_a_fails_on_a_successful_baseline(tmp_path):
    path = tmp_path / "one.toml"
    path.write_text(CAMPAIGN.replace('"start_bonus=0.01", ', ""))
    campaign = load_campaign(path)
    root = tmp_path / "results"
    for run in campaign.runs():
        if run.method.name.startswith("sac"):
            fake_run(root / run.folder, False, [True] + [False] * 3, [[1, 0, 0, 0]] * 2, (0, 1))
        else:
            fake_run(root / run.folder, True, [True] * 4, [[0.4, 0.1, 0.1, 0.4]] * 2)
    (design,) = pointreach_grid.read_designs(campaign, root, [40])
    assert not design.claim_a()  # SAC reached the goal in 25% and its own policy succeeds
    assert design.claim_b()  # 100% >= 2 x 25%


def test_unfinished_run_and_budget_errors(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(CAMPAIGN)
    campaign = load_campaign(path)
    with pytest.raises(ValueError, match="exceeds"):
        pointreach_grid.read_designs(campaign, tmp_path, [80])
    with pytest.raises(ValueError, match="has not finished its 40 steps"):
        pointreach_grid.read_designs(campaign, tmp_path, [40])
