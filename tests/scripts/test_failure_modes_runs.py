"""Failure modes of run folders, checkpoints and the results driver (issue 42, parts 1-4, 6):
no run's data is overwritten, names from a campaign file are not paths, the driver never
resumes the wrong thing nor pools two things as one, resume says what it does, and faults (a
full disk, a dead Ray address, a hostile archive) get one clear line.

Every refusal is checked to happen before anything is written: the tests compare bytes."""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
import torch

from cleanrl_qmp import sac_qmp, uds_qmp
from conftest import write_campaign
from qmp_experiments import sweep
from qmp_experiments.aggregate import summarize
from qmp_experiments.campaign import Method, Run, load_campaign
from qmp_harness.checkpoints import CheckpointWriteError, load_checkpoint, save_checkpoint
from qmp_harness.config import parse_command_line
from qmp_harness.harness import TrainingRun, counter_problems
from qmp_harness.run_files import (
    EXIT_RUN_FOLDER_BUSY,
    EXIT_WRITE_FAILED,
    RunFolderLock,
    files_of_a_run,
)

TINY = ["--total-timesteps", "200", "--learning-starts", "100", "--batch-size", "16",
        "--hidden", "32", "32", "--eval-every", "200", "--eval-episodes", "1",
        "--checkpoint-every", "100", "--keep-checkpoints", "0", "--no-progress"]  # fmt: skip
FAST = ["--env-id", "qmp/PointReach-v0", *TINY]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (``.lock`` included) and its content's hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def exit_code(call) -> int:
    with pytest.raises(SystemExit) as stopped:
        call()
    return stopped.value.code


def fresh_run(argv: list[str]) -> TrainingRun:
    """A TrainingRun as a script starts it (no env is built)."""
    return TrainingRun(parse_command_line(sac_qmp.Args, argv))


def run_sac(argv: list[str]) -> Path:
    return sac_qmp.main(parse_command_line(sac_qmp.Args, argv))


def a_finished_run(run_dir: Path) -> Path:
    """A run folder as a finished run leaves it (no training needed to refuse it)."""
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "step_300.pt").write_bytes(b"weights")
    (run_dir / "args.json").write_text(json.dumps({"env_id": "qmp/PointReach-v0"}))
    (run_dir / "metrics.csv").write_text("global_step,eval/success_mean\n300,0.5\n")
    (run_dir / "timing.json").write_text('{"env_steps": 300}')
    return run_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny finished run (checkpoints at steps 100 and 200) to resume and to tamper with."""
    run_dir = tmp_path_factory.mktemp("runs") / "noqmp"
    sac_qmp.main(parse_command_line(sac_qmp.Args, [*FAST, "--no-qmp", "--run-dir", str(run_dir)]))
    return run_dir


# -- 1. a run's data is never overwritten ------------------------------------------------------
@pytest.mark.parametrize(
    "leftover", ["timing.json", "args.json", "metrics.csv", "checkpoints/step_300.pt"]
)
def test_a_fresh_run_in_a_folder_holding_a_run_is_refused_before_writing(
    tmp_path, leftover, capsys
):
    run_dir = tmp_path / "run"
    a_finished_run(run_dir)
    for path in run_dir.rglob("*"):
        if path.is_file() and str(path.relative_to(run_dir)) != leftover:
            path.unlink()
    before = snapshot(run_dir)
    assert exit_code(lambda: fresh_run([*FAST, "--run-dir", str(run_dir)])) == 2
    err = capsys.readouterr().err
    assert f"run folder {run_dir} already holds a run" in err
    assert f"--resume {run_dir}" in err and "--overwrite" in err
    assert snapshot(run_dir) == before


def test_the_drivers_own_files_do_not_make_a_run_and_nothing_is_written_before_the_first_log(
    tmp_path,
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "train.log").write_text("$ sac_qmp.py ...\n")
    (run_dir / "checkpoints").mkdir()  # empty: holds nothing
    RunFolderLock(run_dir).acquire().release()
    before = snapshot(run_dir)
    run = fresh_run([*FAST, "--run-dir", str(run_dir)])
    assert snapshot(run_dir) == before  # locked (the lock file existed), nothing written
    assert run.lock is not None and run.lock.held
    run.logger.scalars({"x": 1.0}, 1)
    assert (run_dir / "args.json").is_file() and (run_dir / "provenance.jsonl").is_file()
    run.logger.close()
    run.lock.release()


def test_overwrite_moves_the_old_run_aside_and_says_where(tmp_path, capsys):
    run_dir = a_finished_run(tmp_path / "run")
    before = snapshot(run_dir)
    run = fresh_run([*FAST, "--run-dir", str(run_dir), "--overwrite"])
    assert snapshot(run_dir) == before  # moved only at the first write
    run.logger.close()
    (aside,) = tmp_path.glob("run.replaced-*")
    assert f"moved the previous run of {run_dir} to {aside}" in capsys.readouterr().out
    assert snapshot(aside) == before  # every file kept, byte for byte
    assert not (run_dir / "timing.json").exists() and not (run_dir / "checkpoints").exists()
    run.lock.release()


def test_a_run_that_appears_while_a_script_starts_stops_it_as_busy(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run = fresh_run([*FAST, "--run-dir", str(run_dir)])
    assert not run_dir.exists()
    a_finished_run(run_dir)  # another process finished a run there meanwhile
    before = snapshot(run_dir)
    assert exit_code(lambda: run.logger) == EXIT_RUN_FOLDER_BUSY
    assert "started a run in" in capsys.readouterr().err
    assert {k: v for k, v in snapshot(run_dir).items() if k != ".lock"} == before


def test_the_demo_moves_its_previous_run_aside(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a_finished_run(tmp_path / "runs" / "demo")
    run = TrainingRun(sac_qmp.Args(demo=True, progress=False))
    run.logger.close()
    assert len(list((tmp_path / "runs").glob("demo.replaced-*"))) == 1
    run.lock.release()


@pytest.mark.parametrize(
    "argv",
    [
        # Data sharing on a one-task env (refused by the script after building its envs).
        (uds_qmp, ["--env-id", "qmp/PointReach-v0", *TINY]),
        # Helper policies of PointReach on a 6-dimensional action space.
        (sac_qmp, ["--env-id", "qmp/MultistageReacher-v0", "--qmp-helpers", "up", *TINY]),
    ],
    ids=["sharing_on_one_task", "helpers_of_another_env"],
)
def test_a_script_that_fails_its_own_checks_leaves_its_folder_untouched(tmp_path, argv):
    script, flags = argv
    new_folder, driver_folder = tmp_path / "new", tmp_path / "driver"
    driver_folder.mkdir()
    (driver_folder / "train.log").write_text("$ ...\n")
    RunFolderLock(driver_folder).acquire().release()
    before = snapshot(driver_folder)
    for run_dir in (new_folder, driver_folder):
        with pytest.raises(BaseException):  # noqa: B017 - whatever the script raises
            script.main(parse_command_line(script.Args, [*flags, "--run-dir", str(run_dir)]))
    assert not new_folder.exists()
    assert snapshot(driver_folder) == before


# -- 4. resume says what it does ----------------------------------------------------------------
def test_resume_contradictions_are_refused_before_anything(tmp_path, capsys):
    checkpoint = tmp_path / "run" / "checkpoints" / "step_150.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"never read")
    elsewhere = tmp_path / "elsewhere"
    before = snapshot(tmp_path)
    argv = ["--resume", str(checkpoint), "--run-dir", str(elsewhere)]
    assert exit_code(lambda: fresh_run(argv)) == 2
    assert "--run-dir" in capsys.readouterr().err
    assert exit_code(lambda: fresh_run(["--resume", str(checkpoint), "--overwrite"])) == 2
    assert "--overwrite starts a run over" in capsys.readouterr().err
    missing = tmp_path / "nowhere" / "checkpoints" / "step_1.pt"
    assert exit_code(lambda: fresh_run(["--resume", str(missing)])) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert snapshot(tmp_path) == before and not (tmp_path / "nowhere").exists()
    assert not elsewhere.exists()


@pytest.mark.parametrize("name", ["notes.txt", "step_200.pt", "checkpoints/model.pt"])
def test_a_resume_target_that_is_not_a_runs_checkpoint_is_left_as_it_is(
    trained, tmp_path, name, capsys
):
    """A mistyped --resume (a user's own file, a checkpoint copied out of its run) is refused:
    nothing renamed to .corrupt, no lock file made in its folder or the one above."""
    target = tmp_path / "mine" / name
    target.parent.mkdir(parents=True)
    if name == "step_200.pt":  # a real checkpoint, but not inside a run's checkpoints/
        shutil.copy(trained / "checkpoints" / "step_200.pt", target)
    else:
        target.write_bytes(b"a file of the user's, not a checkpoint")
    before = snapshot(tmp_path)
    assert exit_code(lambda: fresh_run(["--resume", str(target)])) == 2
    err = capsys.readouterr().err
    assert f"--resume {target}: not one of a run's checkpoints" in err
    assert "<run>/checkpoints/step_<N>.pt" in err
    assert snapshot(tmp_path) == before


def test_a_resume_folder_that_is_not_a_run_is_refused_without_a_lock(tmp_path, capsys):
    stranger = tmp_path / "downloads"
    stranger.mkdir()
    (stranger / "step_100.pt").write_bytes(b"not ours")
    stopped_early = tmp_path / "run"  # a run killed before its first checkpoint
    stopped_early.mkdir()
    (stopped_early / "args.json").write_text("{}")
    before = snapshot(tmp_path)
    assert exit_code(lambda: fresh_run(["--resume", str(stranger)])) == 2
    assert f"not a run folder (no checkpoints/ folder in {stranger})" in capsys.readouterr().err
    assert exit_code(lambda: fresh_run(["--resume", str(stopped_early)])) == 2
    assert "stopped before its first checkpoint" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_a_damaged_file_that_is_not_a_runs_checkpoint_is_never_renamed(tmp_path):
    """The library call behind --resume and the studies (render_policy, qswitch_scores)."""
    from qmp_harness.checkpoints import DamagedCheckpointError, load_newest_checkpoint

    mine = tmp_path / "model.pt"
    mine.write_bytes(b"truncated")
    with pytest.raises(DamagedCheckpointError, match="model.pt is not a readable checkpoint"):
        load_newest_checkpoint(mine)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


@pytest.mark.parametrize("where", ["a file", "inside a file"])
def test_a_run_dir_that_cannot_be_made_is_refused_before_anything(tmp_path, where, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    run_dir = a_file if where == "a file" else a_file / "run"
    before = snapshot(tmp_path)
    assert exit_code(lambda: fresh_run([*FAST, "--run-dir", str(run_dir)])) == 2
    err = capsys.readouterr().err
    assert f"--run-dir {run_dir}: " in err and "give a --run-dir in a folder you can write" in err
    assert snapshot(tmp_path) == before
    with pytest.raises(SystemExit) as stopped:
        sweep.main(["reacher", "--root", str(run_dir), "--report-only"])
    assert stopped.value.code == 2 and f"--root {run_dir}: " in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_a_run_folder_the_kernel_refuses_at_the_first_write_is_named(tmp_path, monkeypatch, capsys):
    """What no check before the first write can see (a folder under /proc, a quota)."""

    def refused_by_the_kernel(self):
        raise OSError(errno.ENOENT, "No such file or directory", str(self.run_dir))

    run = fresh_run([*FAST, "--run-dir", str(tmp_path / "run")])
    monkeypatch.setattr(RunFolderLock, "acquire", refused_by_the_kernel)
    assert exit_code(lambda: run.logger) == EXIT_WRITE_FAILED
    err = capsys.readouterr().err
    assert f"could not make the run folder {tmp_path / 'run'}: " in err and "Traceback" not in err


def test_resume_with_the_run_dir_of_its_own_checkpoint_continues(trained, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    (run_dir / "timing.json").unlink()
    checkpoint = str(run_dir / "checkpoints" / "step_200.pt")  # at its budget: finishes at once
    run_sac(["--resume", checkpoint, "--run-dir", str(run_dir), "--no-progress"])
    assert json.loads((run_dir / "timing.json").read_text())["env_steps"] == 200


def test_real_checkpoints_pass_the_counter_checks(trained):
    for path in (trained / "checkpoints").iterdir():
        assert counter_problems(load_checkpoint(path)) == [], path


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ({"global_step": 10**9}, "past the run's own budget"),
        ({"global_step": 150}, "replay buffer holds"),
        ({"global_step": -5}, "global_step -5"),
        ({"global_step": 200.0}, "must be an integer"),
        ({"last_eval_step": 10**6}, "last_eval_step"),
    ],
)
def test_a_checkpoint_whose_counters_disagree_with_itself_is_refused(
    trained, tmp_path, edit, named, capsys
):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    path = run_dir / "checkpoints" / "step_200.pt"
    payload = load_checkpoint(path)
    payload.update(edit)
    torch.save(payload, path)
    before = snapshot(run_dir)
    assert exit_code(lambda: fresh_run(["--resume", str(path)])) == 2
    err = capsys.readouterr().err
    assert f"{path} is inconsistent" in err and named in err
    assert snapshot(run_dir) == before


# -- 6. a checkpoint write that fails -------------------------------------------------------------
def test_a_full_disk_names_the_file_keeps_the_previous_checkpoint_and_exits_74(
    tmp_path, monkeypatch, capsys
):
    run = fresh_run([*FAST, "--run-dir", str(tmp_path / "run"), "--keep-checkpoints", "1"])
    run.global_step = 150
    first = run.save({"weights": torch.arange(10.0)})
    intact = first.read_bytes()

    def disk_full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    run.global_step = 300
    assert exit_code(lambda: run.save({"weights": torch.arange(10.0)})) == EXIT_WRITE_FAILED
    err = capsys.readouterr().err
    assert "could not write checkpoint" in err and str(first.parent / "step_300.pt") in err
    assert "is full" in err and "step_150.pt" in err
    assert sorted(p.name for p in first.parent.iterdir()) == ["step_150.pt"]  # none pruned
    assert first.read_bytes() == intact


def test_a_file_size_limit_is_named_and_the_previous_checkpoint_kept(tmp_path):
    """RLIMIT_FSIZE in a child process: torch reports only 'iostream error'."""
    code = textwrap.dedent(
        f"""
        import resource, torch
        from pathlib import Path
        from qmp_harness.checkpoints import CheckpointWriteError, save_checkpoint
        folder = Path({str(tmp_path)!r}) / "checkpoints"
        save_checkpoint(folder / "step_1.pt", {{"w": torch.zeros(10)}})
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
        try:
            save_checkpoint(folder / "step_2.pt", {{"w": torch.zeros(1_000_000)}})
        except CheckpointWriteError as error:
            print(error)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / "checkpoints" / "step_2.pt") in done.stdout
    assert "file-size limit (ulimit -f) of 200000 bytes" in done.stdout
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_1.pt"]
    kept = load_checkpoint(tmp_path / "checkpoints" / "step_1.pt")
    assert torch.equal(kept["w"], torch.zeros(10))


def test_a_write_error_of_another_kind_is_reported_as_it_is(tmp_path, monkeypatch):
    def denied(*_args, **_kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(torch, "save", denied)
    with pytest.raises(CheckpointWriteError, match=r"step_5.pt: PermissionError.*none yet"):
        save_checkpoint(tmp_path / "checkpoints" / "step_5.pt", {})
    assert not list((tmp_path / "checkpoints").iterdir())


# -- 2. names from a campaign file are not paths ------------------------------------------------
def edited_campaign(tmp_path: Path, old: str, new: str, name: str = "tiny") -> Path:
    path = write_campaign(tmp_path, name=name)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ('name = "with_qmp"', 'name = "../../escaped"',
         r"methods\[0\]\.name = '\.\./\.\./escaped'"),
        ('name = "with_qmp"', 'name = "a/b"', r"methods\[0\]\.name = 'a/b'"),
        ('name = "with_qmp"', 'name = ".hidden"', r"methods\[0\]\.name"),
        ('name = "with_qmp"', 'name = ""', r"methods\[0\]\.name = ''"),
        ("[[methods]]", '[overrides]\n"--batch-size" = ["../../x"]\n\n[[methods]]',
         r"overrides\.'--batch-size'\[0\] = '\.\./\.\./x'"),
        ("[[methods]]", '[overrides]\n"--batch-size" = ["8", "a/b"]\n\n[[methods]]',
         r"overrides\.'--batch-size'\[1\]"),
        ("[[methods]]", '[overrides]\n"../x" = ["8"]\n\n[[methods]]', r"overrides\.'\.\./x'"),
    ],
)  # fmt: skip
def test_names_that_become_paths_are_checked_and_the_key_named(tmp_path, old, new, named):
    with pytest.raises(ValueError, match=named):
        load_campaign(edited_campaign(tmp_path, old, new))


def test_a_campaign_file_name_that_is_not_a_safe_folder_name_is_refused(tmp_path):
    path = write_campaign(tmp_path, name="two words")
    with pytest.raises(ValueError, match="the campaign's name"):
        load_campaign(path)


def test_a_run_folder_outside_the_results_root_is_never_created(tmp_path):
    campaign = load_campaign(write_campaign(tmp_path))
    method = Method("x", "sac_qmp.py")
    run = Run("qmp/PointReach-v0", method, 1, "../../outside/seed_1", campaign.runs()[0].script)
    root = tmp_path / "a" / "results"
    outcome = sweep.execute_run(campaign, run, root)
    assert outcome.status == "failed" and "outside the results root" in outcome.detail
    assert not (tmp_path / "outside").exists() and not root.exists()


# -- 3. refused at load, naming the key -----------------------------------------------------------
@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ('"qmp/MultistageReacher-v0"', '"qmp/Nope-v0"', r"env_ids\[0\] = 'qmp/Nope-v0'"),
        ('env_ids = ["qmp/MultistageReacher-v0"]', "env_ids = []", "env_ids is empty"),
        ('flags = ["--qmp"]', 'flags = ["--qmp", "--batchsize", "8"]',
         r"methods\[0\]\.flags: --batchsize is not a flag"),
        ('"--log-every", "100"', '"--log-every", "100", "--evaluate"',
         "flags: --evaluate is not a flag"),
        ('flags = ["--qmp"]', 'flags = ["--qmp", "--seed", "3"]',
         r"methods\[0\]\.flags: --seed is set by seeds"),
        ('"--log-every", "100"', '"--log-every", "100", "--total-timesteps=5"',
         "--total-timesteps=5 is set by total_timesteps"),
        ("[[methods]]", '[overrides]\n"--nope" = ["1"]\n\n[[methods]]',
         "overrides: --nope is not a flag"),
        ("[[methods]]", '[overrides]\n"--batch-size" = []\n\n[[methods]]',
         "the grid would hold no runs"),
        ("[[methods]]", '[overrides]\n"--batch-size" = ["8", "8"]\n\n[[methods]]',
         r"repeats \['8'\]"),
        ("seeds = [1, 2]", "seeds = [1, -2]", r"seeds\[1\] must be an integer >= 0, got -2"),
        ("seeds = [1, 2]", "seeds = [1.5]", r"seeds\[0\] must be an integer >= 0, got 1.5"),
        ("seeds = [1, 2]", "seeds = [true]", r"seeds\[0\] must be an integer"),
        ("seeds = [1, 2]", "seeds = [4294967296]", r"seeds\[0\] must be below 2\*\*32"),
        ("seeds = [1, 2]", "seeds = [2, 1, 2]", r"seeds repeats \[2\]"),
        ("seeds = [1, 2]", "seeds = []", "seeds must be a non-empty list"),
        ("seeds = [1, 2]", "seeds = [1, 2]\nkeep_checkpoints = -1",
         "keep_checkpoints must be an integer >= 0, got -1"),
        ("seeds = [1, 2]", "seeds = [1, 2]\nkeep_checkpoints = 1.5", "keep_checkpoints must be"),
    ],
)  # fmt: skip
def test_what_would_fail_every_run_is_refused_at_load(tmp_path, old, new, named):
    with pytest.raises(ValueError, match=named):
        load_campaign(edited_campaign(tmp_path, old, new))


def test_a_campaign_without_methods_is_refused(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text('env_ids = ["qmp/PointReach-v0"]\ntotal_timesteps = 10\nseeds = [1]\n'
                    "checkpoint_every = 5\nmethods = []\n")  # fmt: skip
    with pytest.raises(ValueError, match="methods must be a non-empty list"):
        load_campaign(path)


# -- 3. the driver never resumes the wrong thing ---------------------------------------------------
def test_the_resume_command_carries_the_runs_whole_configuration(tmp_path):
    campaign = load_campaign(write_campaign(tmp_path))
    run = campaign.runs()[0]
    run_dir = tmp_path / run.folder
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"step": 300}, run_dir / "checkpoints" / "step_300.pt")
    command = sweep.choose_command(campaign, run, run_dir)
    fresh = campaign.fresh_command(run, run_dir)
    assert command[: len(fresh)] == fresh
    assert command[len(fresh) :] == ["--resume", str(run_dir / "checkpoints" / "step_300.pt")]


def test_a_checkpoint_of_another_method_or_seed_is_refused_by_the_resume_command(
    trained, tmp_path, capsys
):
    """A --no-qmp seed-1 run's checkpoint copied into a with-QMP run, or into seed 2 of the
    same method: the driver's resume command names the contradiction; nothing changes."""
    campaign_file = write_campaign(tmp_path)
    campaign_file.write_text(
        campaign_file.read_text().replace("qmp/MultistageReacher-v0", "qmp/PointReach-v0")
    )
    campaign = load_campaign(campaign_file)
    foreign = {
        "with_qmp/seed_1": "--qmp: the checkpoint's run has --no-qmp",
        "without_qmp/seed_2": "--seed 2: the checkpoint's run has 1",
    }
    for folder, named in foreign.items():
        run = next(r for r in campaign.runs() if r.folder == f"tiny/{folder}")
        run_dir = tmp_path / "results" / run.folder
        shutil.copytree(trained / "checkpoints", run_dir / "checkpoints")
        RunFolderLock(run_dir).acquire().release()  # as the driver leaves it
        before = snapshot(run_dir)
        argv = sweep.choose_command(campaign, run, run_dir)[2:]  # after python and the script
        assert exit_code(lambda argv=argv: run_sac(argv)) == 2
        assert named in capsys.readouterr().err
        assert snapshot(run_dir) == before


def test_a_changed_campaign_flag_is_refused_by_the_resume_command(trained, tmp_path, capsys):
    campaign_file = write_campaign(tmp_path)
    text = campaign_file.read_text().replace("qmp/MultistageReacher-v0", "qmp/PointReach-v0")
    campaign_file.write_text(text.replace('"--batch-size", "16"', '"--batch-size", "32"'))
    campaign = load_campaign(campaign_file)
    run = next(r for r in campaign.runs() if r.folder == "tiny/without_qmp/seed_1")
    run_dir = tmp_path / "results" / run.folder
    shutil.copytree(trained, run_dir)
    argv = sweep.choose_command(campaign, run, run_dir)[2:]
    assert exit_code(lambda: run_sac(argv)) == 2
    assert "--batch-size 32: the checkpoint's run has 16" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("started_with", "named"),
    [
        ({"qmp": True}, "--qmp: "),
        ({"seed": 2}, "--seed: "),
        ({"env_id": "qmp/PointReach-v1"}, "--env-id: "),
        ({"exp_name": "uds_qmp"}, "--exp-name: "),
    ],
)
def test_a_checkpoint_that_is_not_the_runs_own_is_refused_by_its_args_json(
    trained, tmp_path, started_with, named, capsys
):
    """Resumed with no flags at all, a checkpoint copied into another run's folder is compared
    with that run's args.json (what it was started with)."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    (run_dir / "timing.json").unlink()
    record = json.loads((run_dir / "args.json").read_text())
    (run_dir / "args.json").write_text(json.dumps({**record, **started_with}))
    before = snapshot(run_dir)
    assert exit_code(lambda: fresh_run(["--resume", str(run_dir)])) == 2
    err = capsys.readouterr().err
    assert "is not this run's checkpoint" in err and named in err and "args.json" in err
    assert snapshot(run_dir) == before


def test_the_driver_reports_a_scripts_refusal_in_one_line(tmp_path):
    """A script that refuses (exit 2, ``error:`` lines) is reported with its words."""
    script = tmp_path / "refuses.py"
    script.write_text(
        "import sys\nprint('noise')\n"
        "print('error: these flags contradict step_300.pt:\\n  --qmp: the checkpoint\\'s run "
        "has --no-qmp', file=sys.stderr)\nsys.exit(2)\n"
    )
    campaign_file = edited_campaign(tmp_path, 'script = "sac_qmp.py"', f'script = "{script}"')
    campaign = load_campaign(campaign_file)
    run = campaign.runs()[0]
    root = tmp_path / "results"
    (root / run.folder / "checkpoints").mkdir(parents=True)
    torch.save({}, root / run.folder / "checkpoints" / "step_300.pt")
    outcome = sweep.execute_run(campaign, run, root)
    assert outcome.status == "failed"
    assert "--qmp: the checkpoint's run has --no-qmp" in outcome.detail
    assert "campaign's flags changed" in outcome.detail


def test_a_run_killed_before_its_first_checkpoint_starts_over_moving_its_files_aside(tmp_path):
    campaign = load_campaign(write_campaign(tmp_path))
    run = campaign.runs()[0]
    run_dir = tmp_path / run.folder
    run_dir.mkdir(parents=True)
    (run_dir / "args.json").write_text("{}")
    assert sweep.choose_command(campaign, run, run_dir)[-1] == "--overwrite"
    (run_dir / "timing.json").write_text('{"env_steps": 300}')  # finished under a lower budget
    with pytest.raises(sweep.RunNotStartable, match="finished at 300 env steps"):
        sweep.choose_command(campaign, run, run_dir)
    (run_dir / "timing.json").unlink()
    (run_dir / "timing.json").mkdir()
    with pytest.raises(sweep.RunNotStartable, match="timing.json is not a regular file"):
        sweep.choose_command(campaign, run, run_dir)


# -- 3. never two things as one; damaged reports ---------------------------------------------------
def write_run(run_dir: Path, args: dict, rows: list[str], selection: str | None = None) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "args.json").write_text(json.dumps(args))
    header = "global_step,eval/success_mean,eval/return_mean,eval/success/a,eval/success/b\n"
    (run_dir / "metrics.csv").write_text(header + "".join(f"{r}\n" for r in rows))
    if selection is not None:
        (run_dir / "selection.jsonl").write_text(selection)
    (run_dir / "timing.json").write_text('{"env_steps": 600}')
    return run_dir


GOOD_ROWS = ["300,0.5,-3.0,0.5,0.5", "600,1.0,-1.0,1.0,1.0"]
ARGS = {"env_id": "qmp/PointReach-v0", "exp_name": "sac_qmp", "qmp": True, "seed": 1}


def test_override_values_are_rows_of_their_own_never_seeds_of_one_method(tmp_path):
    runs = [
        write_run(tmp_path / f"b{batch}_s{seed}", {**ARGS, "batch_size": batch, "seed": seed},
                  GOOD_ROWS)
        for batch in (8, 16) for seed in (1, 2)
    ]  # fmt: skip
    summary, per_task = summarize(runs, last=2)
    assert [(row["method"], row["seeds"]) for row in summary] == [
        ("sac_qmp + QMP [batch_size=16]", 2),
        ("sac_qmp + QMP [batch_size=8]", 2),
    ]
    assert len(per_task) == 4
    # Runs that differ only in how they were run (seed, budget, run folder) still pool.
    same = [write_run(tmp_path / f"s{seed}", {**ARGS, "seed": seed, "total_timesteps": seed},
                      GOOD_ROWS) for seed in (1, 2)]  # fmt: skip
    assert [(r["method"], r["seeds"]) for r in summarize(same, 2)[0]] == [("sac_qmp + QMP", 2)]
    # Another evaluation schedule is another measurement: its own row, never a crash on steps
    # the runs do not share.
    cadence = [write_run(tmp_path / f"e{every}", {**ARGS, "eval_every": every},
                         [f"{every},0.5,-3.0,0.5,0.5"]) for every in (100, 300)]  # fmt: skip
    assert [r["method"] for r in summarize(cadence, 1)[0]] == [
        "sac_qmp + QMP [eval_every=100]",
        "sac_qmp + QMP [eval_every=300]",
    ]


DAMAGE = {
    "garbage_args": ("args.json", "garbage {"),
    "args_not_a_run": ("args.json", "[1, 2]"),
    "bad_selection": ("selection.jsonl", '{"global_step": 300, "names": ["a"]}\nnot json\n'),
    "non_numeric": ("metrics.csv", "global_step,eval/success_mean,eval/return_mean,"
                    "eval/success/a,eval/success/b\n300,0.5,-3.0,high,0.5\n"),
    "short_row": ("metrics.csv", "global_step,eval/success_mean,eval/return_mean,"
                  "eval/success/a,eval/success/b\n300,0.5\n"),
    "header_only": ("metrics.csv", "global_step,eval/success_mean\n"),
    "no_return_column": ("metrics.csv", "global_step,eval/success_mean,eval/success/a,"
                         "eval/success/b\n300,0.5,0.5,0.5\n"),
    "metrics_missing": ("metrics.csv", None),
    "metrics_a_folder": ("metrics.csv", "folder"),
}  # fmt: skip


def test_report_only_names_each_damaged_file_and_reports_the_rest(tmp_path, capsys):
    campaign_file = write_campaign(tmp_path)
    seeds = list(range(1, len(DAMAGE) + 2))  # seed 1 of each method intact, one damage a seed
    text = campaign_file.read_text().replace("seeds = [1, 2]", f"seeds = {seeds}")
    campaign_file.write_text(text.replace('"qmp/MultistageReacher-v0"', '"qmp/PointReach-v0"'))
    root = tmp_path / "results"
    selection = '{"global_step": 300, "names": ["a", "b"], "matrix": [[1, 0], [0, 1]]}\n'
    for seed in seeds:
        for method, qmp in (("with_qmp", True), ("without_qmp", False)):
            args = {**ARGS, "qmp": qmp, "seed": seed}
            write_run(root / "tiny" / method / f"seed_{seed}", args, GOOD_ROWS, selection)
    damaged = {}
    for seed, (kind, (name, content)) in enumerate(DAMAGE.items(), start=2):
        path = root / "tiny" / "with_qmp" / f"seed_{seed}" / name
        path.unlink(missing_ok=True)
        if content == "folder":
            path.mkdir()
        elif content is not None:
            path.write_text(content)
        damaged[kind] = path
    sweep.main([str(campaign_file), "--root", str(root), "--report-only"])
    out = capsys.readouterr().out
    for kind, path in damaged.items():
        assert f"left out tiny/{path.parent.relative_to(root / 'tiny')}: {path}" in out, kind
    with (root / "tiny" / "summary.csv").open() as f:
        rows = {r["method"]: r["seeds"] for r in csv.DictReader(f)}
    assert rows == {"sac_qmp + QMP": "1", "sac_qmp (no QMP)": str(len(seeds))}


@pytest.mark.parametrize(
    "content",
    ["Infinity", '{"env_steps": Infinity}', '{"env_steps": 1e999}', '{"env_steps": true}',
     '{"env_steps": -5}', '{"env_steps": "600"}', "[]", "\udcff", "9" * 5000, "folder"],
)  # fmt: skip
def test_timing_that_is_not_a_file_or_holds_nonsense_counts_as_unfinished(tmp_path, content):
    timing = tmp_path / "timing.json"
    if content == "folder":
        timing.mkdir()
    else:
        timing.write_bytes(content.encode(errors="surrogateescape"))
    said: list[str] = []
    assert sweep.is_finished(tmp_path, 600, say=said.append) is False
    assert len(said) == 1 and str(timing) in said[0]


# -- 6. Ray: the address and the collected archives ---------------------------------------------
def archive_with(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        ok = tarfile.TarInfo("metrics.csv")
        ok.size = 3
        tar.addfile(ok, io.BytesIO(b"1,2"))
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    ("hostile", "named"),
    [
        (member("timing.json", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link to '/etc/passwd'"),
        (member("args.json", tarfile.LNKTYPE, "metrics.csv"), "hard link"),
        (member("/tmp/escaped.txt"), "outside the run folder"),
        (member("../escaped.txt"), "outside the run folder"),
        (member("dev", tarfile.CHRTYPE), "not a regular file"),
    ],
)
def test_a_collected_archive_with_a_link_or_escaping_member_is_refused_whole(
    tmp_path, hostile, named
):
    run_dir = tmp_path / "results" / "run"
    with pytest.raises(sweep.UnsafeArchiveError, match=named) as refused:
        sweep.unpack_run_folder(archive_with(hostile), run_dir)
    assert repr(hostile.name) in str(refused.value)
    assert not run_dir.exists() and not (tmp_path / "escaped.txt").exists()


def test_packing_leaves_links_out_and_round_trips_files(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "metrics.csv").write_text("global_step\n1\n")
    (run_dir / "checkpoints" / "step_1.pt").write_bytes(b"x")
    (run_dir / "link").symlink_to("/etc/hostname")
    target = tmp_path / "collected"
    sweep.unpack_run_folder(sweep.pack_run_folder(run_dir), target)
    assert sorted(p.name for p in target.rglob("*")) == ["metrics.csv"]


@pytest.mark.parametrize(
    ("address", "said"),
    [
        ("nonsense", "is not host:port"),
        ("10.0.0.5", "is not host:port"),
        ("host:99999", "is not host:port"),
        ("auto", "no running Ray cluster was found"),
    ],
)
def test_a_ray_address_that_cannot_be_a_cluster_is_named(address, said, monkeypatch):
    monkeypatch.setattr(sweep, "ray_auto_address", lambda: None)
    problem = sweep.ray_address_problem(address, timeout=2)
    assert problem is not None and said in problem and "ray start --head" in problem


def test_a_ray_address_with_nothing_listening_is_named(monkeypatch):
    with socket.socket() as probe:  # a free port, closed again: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    problem = sweep.ray_address_problem(f"127.0.0.1:{port}", timeout=2)
    assert problem is not None and f"no Ray cluster at 127.0.0.1:{port}" in problem


def test_a_port_that_is_not_a_ray_head_ends_the_driver_in_one_line_within_the_limit(tmp_path):
    """Something accepts connections but never speaks Ray: ray.init would wait forever."""
    campaign = write_campaign(tmp_path)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "qmp_experiments.sweep", str(campaign), "--root",
             str(tmp_path / "results"), "--ray-address", f"127.0.0.1:{port}",
             "--ray-connect-timeout", "3"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"error: --ray-address 127.0.0.1:{port}: no Ray cluster answered within 3 s" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr and not (tmp_path / "results").exists()


def test_files_of_a_run_ignore_what_the_driver_writes(tmp_path):
    (tmp_path / "train.log").write_text("")
    RunFolderLock(tmp_path).acquire().release()
    assert files_of_a_run(tmp_path) == []
    os.mkdir(tmp_path / "checkpoints")
    assert files_of_a_run(tmp_path) == []
    (tmp_path / "events.out.tfevents.1.host.2.0").write_bytes(b"")
    assert [p.name for p in files_of_a_run(tmp_path)] == ["events.out.tfevents.1.host.2.0"]


@pytest.mark.parametrize("tool", ["aggregate", "plot"])
def test_the_aggregate_and_plot_commands_name_a_damaged_file(tmp_path, tool):
    good = write_run(tmp_path / "good", ARGS, GOOD_ROWS)
    bad = write_run(tmp_path / "bad", ARGS, ["300,0.5,-3.0,0.5"])  # a short row
    done = subprocess.run(
        [sys.executable, "-m", f"qmp_experiments.{tool}", str(good), str(bad), "--out",
         str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and f"{bad / 'metrics.csv'} line 2: 5 fields" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("tool", "argv", "named"),
    [
        ("comparison", ["nonexistent"], "unknown campaign 'nonexistent'"),
        ("comparison", ["tiny", "--last", "0"], "--last 0: must be at least 1"),
        ("comparison", ["tiny", "--root", "{file}"], "is not a folder, so"),
        ("aggregate", ["{run}", "--last", "-1", "--out", "{out}"], "--last -1: must be at least 1"),
        ("aggregate", ["{run}", "--out", "{file}/summary"], "exists and is not a folder"),
        ("plot", ["{run}", "--out", "{file}/plots"], "is not a folder, so"),
        ("aggregate", ["{run}", "--last", "3", "--out", "{out}"], "has 2 evaluation(s), fewer"),
        ("run_cost", ["{tmp}/nowhere"], "no finished run"),
        ("run_cost", ["{run}", "--out", "{tmp}"], "is a folder; give a file name"),
    ],
)
def test_the_report_commands_refuse_bad_flags_in_one_line_writing_nothing(
    tmp_path, monkeypatch, tool, argv, named, capsys
):
    """What the report commands are given is checked before they write: never a traceback from
    pathlib, never a table averaged over zero evaluations."""
    import importlib

    monkeypatch.chdir(tmp_path)
    write_campaign(tmp_path)  # tiny.toml, a campaign file with no finished runs under results/
    run = write_run(tmp_path / "run", ARGS, GOOD_ROWS)
    (run / "timing.json").write_text('{"env_steps": 300}')
    (tmp_path / "notes.txt").write_text("mine")
    values = {"run": run, "out": tmp_path / "out", "file": tmp_path / "notes.txt", "tmp": tmp_path}
    argv = [str(tmp_path / "tiny.toml") if a == "tiny" else a.format(**values) for a in argv]
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(f"qmp_experiments.{tool}").main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and named in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_averaging_over_no_evaluations_is_refused_by_the_library_too(tmp_path):
    from qmp_experiments import comparison

    run = write_run(tmp_path / "run", ARGS, GOOD_ROWS)
    for last in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="last"):
            summarize([run], last)
        with pytest.raises(ValueError, match="last"):
            comparison.report(load_campaign(write_campaign(tmp_path)), tmp_path, last)
    assert summarize([run], 1)[0][0]["final_success_iqm_last1"] == 1.0
    # More evaluations than the run has: never labelled "last 3" over 2.
    with pytest.raises(ValueError, match="has 2 evaluation\\(s\\), fewer than the last 3"):
        summarize([run], 3)


def test_a_last_longer_than_the_runs_is_refused_before_the_tables_are_rewritten(
    tmp_path, monkeypatch, capsys
):
    """`comparison --last 9` on runs with 2 evaluations averaged what there was under a "last 9"
    label; the sweep's own report averages the last 3, or all of a shorter campaign's runs, and
    its table says how many."""
    from qmp_experiments import comparison, sweep

    monkeypatch.chdir(tmp_path)
    campaign = load_campaign(write_campaign(tmp_path))
    for run in campaign.runs():
        write_run(tmp_path / "results" / run.folder, {**ARGS, "seed": run.seed}, GOOD_ROWS)
    comparison.main([str(tmp_path / "tiny.toml"), "--last", "2"])
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        comparison.main([str(tmp_path / "tiny.toml"), "--last", "9"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "has 2 evaluation(s), fewer than the last 9" in err
    assert "lower --last to 2" in err and snapshot(tmp_path) == before
    sweep.report_campaign(campaign, tmp_path / "results")
    summary = (tmp_path / "results" / campaign.name / "summary.csv").read_text()
    assert "final_success_iqm_last2" in summary.splitlines()[0]
