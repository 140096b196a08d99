"""Every flag is checked at start-up, and a resume never trains something else in a run folder:
bad input exits non-zero with a message naming the flag, and leaves the run folder untouched."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import tyro

from cleanrl_qmp import dnc_sac, mtsac_qmp, sac_qmp, uds_qmp
from conftest import metrics_rows
from qmp_harness.config import RESUMABLE_FLAGS, parse_command_line, registered_qmp_ids

TINY = ["--total-timesteps", "300", "--learning-starts", "100", "--batch-size", "16",
        "--hidden", "32", "32", "--eval-every", "300", "--eval-episodes", "1",
        "--checkpoint-every", "300", "--no-progress"]  # fmt: skip


def run_cli(script, argv: list[str]) -> None:
    script.main(parse_command_line(script.Args, argv))


def refused(script, argv: list[str], capsys) -> str:
    """Run the script's command line, expect exit status 2, return what it printed."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(script, argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    ("script", "argv", "named"),
    [
        (sac_qmp, ["--batch-size", "0"], "--batch-size 0: must be >= 1"),
        (sac_qmp, ["--total-timesteps", "-5"], "--total-timesteps -5: must be > 0"),
        (sac_qmp, ["--eval-every", "0"], "--eval-every 0: must be >= 1"),
        (sac_qmp, ["--checkpoint-every", "-100"], "--checkpoint-every -100: must be >= 0"),
        (sac_qmp, ["--updates-per-step", "-1"], "--updates-per-step -1.0: must be"),
        (sac_qmp, ["--buffer-size", "0"], "--buffer-size 0: must be >= 1"),
        (sac_qmp, ["--gamma", "2"], "--gamma 2.0: must be in [0, 1]"),
        (sac_qmp, ["--log-every", "0"], "--log-every 0: must be >= 1"),
        (sac_qmp, ["--hidden", "0"], "--hidden (0,): needs at least one layer"),
        (sac_qmp, ["--eval-episodes", "0"], "--eval-episodes 0: must be >= 1"),
        (sac_qmp, ["--qmp-hold-steps", "0"], "--qmp-hold-steps 0: must be >= 1"),
        (sac_qmp, ["--qmp-helpers", "sideways"], "unknown helper 'sideways'"),
        (dnc_sac, ["--kl-coef", "-5"], "--kl-coef -5.0: must be >= 0"),
        (dnc_sac, ["--distill-every", "-100"], "--distill-every -100: must be >= 0"),
        (uds_qmp, ["--share-q-quantile", "1.5"], "--share-q-quantile 1.5: must be in [0, 1]"),
        (mtsac_qmp, ["--learning-rate", "nan"], "--learning-rate nan: must be a finite"),
        (sac_qmp, ["--env-options", "bonus=1"], "'bonus' is not an option of qmp/Multistage"),
        (sac_qmp, ["--env-options", "start_bonus"], "'start_bonus' is not KEY=VALUE"),
    ],
)
def test_bad_flags_are_refused_before_the_run_folder_exists(script, argv, named, tmp_path, capsys):
    run_dir = tmp_path / "run"
    err = refused(script, [*argv, "--run-dir", str(run_dir), "--no-progress"], capsys)
    assert "invalid configuration" in err and named in err
    assert not run_dir.exists()


def test_an_unknown_env_id_lists_the_registered_ones(tmp_path, capsys):
    err = refused(sac_qmp, ["--env-id", "qmp/Nope-v0", "--run-dir", str(tmp_path / "r")], capsys)
    assert "--env-id 'qmp/Nope-v0'" in err and "qmp/MultistageReacher-v0" in err
    assert set(registered_qmp_ids()) >= {"qmp/PointReach-v0", "qmp/MetaWorldMT10-v0"}
    assert not (tmp_path / "r").exists()


def test_a_typo_in_a_choice_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        tyro.cli(sac_qmp.Args, args=["--qmp-scoring", "min-twin"])
    assert exit_info.value.code != 0
    assert "min_twin" in capsys.readouterr().err  # the message lists the allowed choices


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "sac"
    run_cli(sac_qmp, [*TINY, "--seed", "3", "--run-dir", str(run_dir)])
    return run_dir


@pytest.mark.parametrize(
    "argv",
    [
        ["--seed", "9"],
        ["--no-qmp"],
        ["--batch-size", "64"],
        ["--env-id", "qmp/PointReach-v0"],
        ["--qmp-scoring", "min_twin"],
    ],
)
def test_flags_that_contradict_the_checkpoint_are_refused(finished_run, argv, capsys):
    before = snapshot(finished_run)
    checkpoint = str(finished_run / "checkpoints" / "step_300.pt")
    err = refused(sac_qmp, ["--resume", checkpoint, *argv], capsys)
    assert "contradict" in err and argv[0] in err and "the checkpoint's run has" in err
    assert snapshot(finished_run) == before


def test_another_scripts_checkpoint_is_refused(finished_run, capsys):
    before = snapshot(finished_run)
    checkpoint = str(finished_run / "checkpoints" / "step_300.pt")
    err = refused(uds_qmp, ["--resume", checkpoint], capsys)
    assert "written by sac_qmp.py, not uds_qmp.py" in err
    assert snapshot(finished_run) == before


def test_the_budget_may_change_on_resume(finished_run, tmp_path):
    assert {"total_timesteps", "progress"} <= RESUMABLE_FLAGS
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(finished_run), str(copy)], check=True)
    run_cli(sac_qmp, ["--resume", str(copy), "--total-timesteps", "600", "--no-progress"])
    assert (copy / "checkpoints" / "step_600.pt").is_file()
    # The replay buffer, sized for 300 steps, grew: the extended run is the 600-step run.
    straight = tmp_path / "straight"
    longer = [("600" if a == "300" and TINY[i - 1] == "--total-timesteps" else a)
              for i, a in enumerate(TINY)]  # fmt: skip
    run_cli(sac_qmp, [*longer, "--seed", "3", "--run-dir", str(straight)])
    assert metrics_rows(copy) == metrics_rows(straight)


def test_a_bad_flag_exits_nonzero_from_the_command_line(tmp_path):
    script = Path(sac_qmp.__file__)
    done = subprocess.run(
        [sys.executable, str(script), "--batch-size", "0", "--run-dir", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "--batch-size 0: must be >= 1" in done.stderr
    assert not (tmp_path / "r").exists()


def test_demo_fills_the_flags_left_at_their_defaults(tmp_path):
    """--demo trains on the demo suite with the demo's values; a flag given explicitly wins."""
    import csv
    import json

    run_dir = tmp_path / "demo"
    run_cli(sac_qmp, ["--demo", "--total-timesteps", "1200", "--run-dir", str(run_dir),
                      "--no-progress"])  # fmt: skip
    args = json.loads((run_dir / "args.json").read_text())
    assert args["env_id"] == "qmp/PointReachMT4-v0" and args["total_timesteps"] == 1200
    assert (args["learning_starts"], args["eval_every"], args["batch_size"]) == (1000, 1000, 64)
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [int(r["global_step"]) for r in rows] == [1000, 1200]  # every 1000 and at the end
    assert "eval/success/reach-bottom-left" in rows[0]
    from qmp_harness.run_logging import plot_demo

    plot_demo(run_dir)  # what `sac_qmp.py --demo` draws after training, without the campaign layer
    drawn = sorted(p.name for p in run_dir.glob("*.png")) + sorted(run_dir.glob("selection_*.md"))
    assert drawn[:1] == ["learning_curves.png"] and len(drawn) == 4


def test_env_options_reach_the_training_envs_and_the_run_record(tmp_path):
    import json

    import numpy as np

    from qmp_harness.checkpoints import load_checkpoint

    run_dir = tmp_path / "bonus"
    argv = [*TINY, "--env-id", "qmp/PointReach-v1", "--env-options", "start_bonus=0.3"]
    run_cli(sac_qmp, [*argv, "--run-dir", str(run_dir)])
    assert json.loads((run_dir / "args.json").read_text())["env_options"] == ["start_bonus=0.3"]
    rewards = load_checkpoint(run_dir / "checkpoints" / "step_300.pt")["rb"].rewards[:300]
    # The point starts inside the start disc: its first steps earn the bonus given, not 0.05.
    assert np.isclose(rewards, 0.3).sum() > 10 and not np.isclose(rewards, 0.05).any()
