"""The results driver on the local backend: campaigns as data, resume, skipping, reports, and
every way it used to lose data (two drivers, SIGTERM, kills mid-write, damaged files)."""

import csv
import json
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import (
    metrics_rows,
    run_sweep,
    sweep_command,
    training_processes,
    wait_for,
    write_campaign,
)
from qmp_experiments import sweep
from qmp_experiments.campaign import bundled_campaigns, load_campaign
from qmp_harness.checkpoints import newest_readable_checkpoint

RUNS = [f"{m}/seed_{s}" for s in (1, 2) for m in ("with_qmp", "without_qmp")]


# -- campaign definitions --------------------------------------------------------------------
def test_bundled_campaigns_load_and_order_runs_seed_by_seed():
    assert {"reacher", "mt10"} <= set(bundled_campaigns())
    reacher = load_campaign("reacher")
    runs = reacher.runs()
    assert len(runs) == 11 * 5 and reacher.total_timesteps == 300_000
    # Every method's seed 1 before any seed 2: a partial campaign is still a fair comparison.
    assert [r.seed for r in runs[:11]] == [1] * 11 and runs[11].seed == 2
    assert runs[0].folder == "reacher/no_sharing_qmp/seed_1" and runs[0].script.is_file()
    assert [r.seed for r in reacher.runs(seeds=[4, 5])][::11] == [4, 5]


def test_campaign_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"unknown campaign 'nope'.*reacher"):
        load_campaign("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text('env_ids = ["qmp/MultistageReacher-v0"]\nseeds = [1]\n')
    with pytest.raises(ValueError, match=r"bad.toml: missing keys \['checkpoint_every'"):
        load_campaign(bad)
    campaign = write_campaign(tmp_path)
    text = campaign.read_text().replace('script = "sac_qmp.py"', 'script = "missing.py"', 1)
    campaign.write_text(text)
    with pytest.raises(ValueError, match=r"with_qmp's script .*missing.py not found"):
        load_campaign(campaign)
    with pytest.raises(ValueError, match=r"seeds \[1, 2\], not \[7\]"):
        load_campaign(write_campaign(tmp_path)).runs(seeds=[1, 7])


def test_flag_overrides_expand_every_method(tmp_path):
    path = write_campaign(tmp_path)
    path.write_text(path.read_text() + '\n[overrides]\n"--batch-size" = ["16", "32"]\n')
    campaign = load_campaign(path)
    names = sorted({r.method.name for r in campaign.runs()})
    assert names == [
        "with_qmp__batch-size=16",
        "with_qmp__batch-size=32",
        "without_qmp__batch-size=16",
        "without_qmp__batch-size=32",
    ]
    run = next(r for r in campaign.runs() if r.method.name == "with_qmp__batch-size=32")
    command = campaign.fresh_command(run, tmp_path / "x")
    assert command[-2:] == ["--batch-size", "32"]  # after the campaign's flags: it wins


def test_command_starts_fresh_then_resumes_from_the_newest_readable_checkpoint(tmp_path, capsys):
    campaign = load_campaign(write_campaign(tmp_path))
    run = campaign.runs()[0]
    run_dir = tmp_path / run.folder
    fresh = sweep.choose_command(campaign, run, run_dir)
    assert fresh[fresh.index("--run-dir") + 1] == str(run_dir) and "--resume" not in fresh
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    for step in (200, 1000, 400):  # newest by step number, not by name order
        torch.save({"step": step}, checkpoints / f"step_{step}.pt")
    (checkpoints / "step_2000 (copy).pt").write_bytes(b"a stray copy")
    resumed = sweep.choose_command(campaign, run, run_dir)
    assert resumed[resumed.index("--resume") + 1].endswith("step_1000.pt")
    assert resumed[resumed.index("--total-timesteps") + 1] == str(campaign.total_timesteps)
    assert "ignoring" in capsys.readouterr().out  # the stray file is named, not fatal
    # A truncated newest checkpoint is set aside and the next one is used.
    data = (checkpoints / "step_1000.pt").read_bytes()
    (checkpoints / "step_1000.pt").write_bytes(data[: len(data) // 2])
    assert newest_readable_checkpoint(checkpoints).name == "step_400.pt"
    assert "step_1000.pt is unreadable" in capsys.readouterr().out
    assert (checkpoints / "step_1000.pt.corrupt").is_file()


# -- the local backend -----------------------------------------------------------------------
def test_campaign_runs_skips_finished_runs_and_reports(reference_campaign, tmp_path):
    campaign, reference = reference_campaign
    root = tmp_path / "results"
    shutil.copytree(reference, root)
    for run in RUNS:
        run_dir = root / "tiny" / run
        # keep_checkpoints 2: the final checkpoint and one fallback.
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
            "step_300.pt",
            "step_600.pt",
        ]
        assert [int(r["global_step"]) for r in metrics_rows(run_dir)] == [300, 600]
        assert json.loads((run_dir / "timing.json").read_text())["env_steps"] == 600
        assert not list(run_dir.rglob("*.tmp"))
    # A clone holds the committed results without their (ignored) checkpoints: still finished.
    for checkpoints in root.glob("tiny/*/seed_*/checkpoints"):
        shutil.rmtree(checkpoints)
    done = run_sweep(campaign, root)
    assert done.returncode == 0 and "0 of 4 runs to do" in done.stdout, done.stdout + done.stderr
    with (root / "tiny" / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["method"] for r in rows) == ["sac_qmp (no QMP)", "sac_qmp + QMP"]
    assert all(r["seeds"] == "2" and r["final_env_steps"] == "600" for r in rows)
    assert (root / "tiny" / "learning_curves.png").is_file()


def test_a_failing_run_is_reported_and_the_driver_exits_nonzero(tmp_path):
    campaign = write_campaign(tmp_path)
    campaign.write_text(campaign.read_text().replace('"16"', '"not-a-number"'))
    done = run_sweep(campaign, tmp_path / "results", "--methods", "without_qmp", "--seeds", "1")
    assert done.returncode != 0 and "runs not finished: tiny/without_qmp/seed_1" in done.stderr
    assert "FAILED" in done.stdout
    assert sorted(p.name for p in (tmp_path / "results" / "tiny").iterdir()) == ["without_qmp"]
    log = tmp_path / "results" / "tiny" / "without_qmp" / "seed_1" / "train.log"
    assert "not-a-number" in log.read_text()


def test_a_script_outside_cleanrl_qmp_is_announced_before_it_runs(tmp_path):
    """A campaign file may name a script of its own: the driver says which before running it,
    so a campaign file from elsewhere cannot run one unannounced."""
    own = tmp_path / "elsewhere" / "own_script.py"
    own.parent.mkdir()
    own.write_text("print('own script ran')\n")
    campaign = tmp_path / "own.toml"
    campaign.write_text(
        'env_ids = ["qmp/MultistageReacher-v0"]\ntotal_timesteps = 600\nseeds = [1]\n'
        'checkpoint_every = 300\n[[methods]]\nname = "mine"\nscript = "elsewhere/own_script.py"\n'
    )
    done = run_sweep(campaign, tmp_path / "results")
    announced = f"own: runs a script outside cleanrl_qmp/: {own.resolve()}"
    lines = done.stdout.splitlines()
    assert announced in lines and lines.index(announced) < next(
        i for i, line in enumerate(lines) if "own/mine/seed_1" in line
    )
    log = tmp_path / "results" / "own" / "mine" / "seed_1" / "train.log"
    assert "own script ran" in log.read_text()
    # The bundled scripts are not announced.
    plain = run_sweep(write_campaign(tmp_path / "b"), tmp_path / "results", "--seeds", "1")
    assert "outside cleanrl_qmp" not in plain.stdout


def test_each_run_gets_the_asked_thread_count(tmp_path):
    log = tmp_path / "train.log"
    code = "import os; print(os.environ['OMP_NUM_THREADS'], os.environ['MKL_NUM_THREADS'])"
    assert sweep.launch([sys.executable, "-c", code], log, threads=3) == 0
    assert log.read_text().splitlines()[-1] == "3 3"


def test_a_campaign_can_pin_its_runs_float_profile(tmp_path):
    """pin_float_profile = true gives every training process the pinned code-path settings."""
    from qmp_harness.float_profile import PINNED_ENVIRONMENT

    path = write_campaign(tmp_path)
    assert load_campaign(path).pin_float_profile is False
    path.write_text("pin_float_profile = true\n" + path.read_text())
    assert load_campaign(path).pin_float_profile is True
    code = "import os; print(os.environ.get('ATEN_CPU_CAPABILITY'), os.environ.get('MKL_CBWR'))"
    log = tmp_path / "train.log"
    assert sweep.launch([sys.executable, "-c", code], log, 1, pin_float_profile=True) == 0
    expected = f"{PINNED_ENVIRONMENT['ATEN_CPU_CAPABILITY']} {PINNED_ENVIRONMENT['MKL_CBWR']}"
    assert log.read_text().splitlines()[-1] == expected
    path.write_text(
        path.read_text().replace("pin_float_profile = true", 'pin_float_profile = "yes"')
    )
    with pytest.raises(ValueError, match="pin_float_profile must be true or false, got 'yes'"):
        load_campaign(path)


def test_report_only_writes_the_results_index(tmp_path, capsys):
    """results/INDEX.md: per campaign file its run folders, the commit(s) each ran at (from its
    provenance) and the command that makes it; folders no campaign names listed apart."""
    campaign = write_campaign(tmp_path)
    root = tmp_path / "results"
    run_dir = root / "tiny" / "with_qmp" / "seed_1"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.csv").write_text("global_step\n300\n")
    segments = [("a" * 40, False), ("b" * 40, True), ("b" * 40, True)]  # resumed twice
    records = [{"git_commit": c, "uncommitted_changes": d} for c, d in segments]
    # Resumed once more from an exported copy (no git): the source digest names the code.
    records.append({"git_commit": None, "source_digest": "sha256:" + "c" * 64})
    (run_dir / "provenance.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "kept_from_before").mkdir()
    sweep.main([str(campaign), "--root", str(root), "--report-only"])
    index = (root / "INDEX.md").read_text()
    assert "## `tiny`" in index and "1 of 4 runs have files" in index
    row = next(line for line in index.splitlines() if "`tiny/with_qmp/seed_1`" in line)
    assert "`aaaaaaaaaaaa`, `bbbbbbbbbbbb+`, `src:cccccccccccc` |" in row
    assert "`python cleanrl_qmp/sac_qmp.py --env-id qmp/MultistageReacher-v0 --seed 1" in row
    assert f"--run-dir {run_dir}" in row and "seed_2" not in index
    assert index.endswith("## Folders no campaign file names\n\n- `kept_from_before/`\n")
    assert "## `reacher`" not in index  # a bundled campaign without a folder is not listed


# -- nothing lost, nothing run twice ---------------------------------------------------------
def test_two_drivers_at_once_never_run_a_run_twice(reference_campaign, tmp_path):
    _, reference = reference_campaign
    campaign = write_campaign(tmp_path)
    root = tmp_path / "results"
    drivers = [
        subprocess.Popen(
            sweep_command(campaign, root, "--jobs", "2"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [d.communicate(timeout=600)[0] for d in drivers]
    for run in RUNS:
        run_dir = root / "tiny" / run
        assert metrics_rows(run_dir) == metrics_rows(reference / "tiny" / run), run
        segments = (run_dir / "provenance.jsonl").read_text().splitlines()
        assert [json.loads(s)["from_step"] for s in segments] == [0], f"{run} trained twice"
    # Each run was trained by exactly one driver; the other saw it busy or finished.
    assert sum(o.count(": done in") for o in outputs) == len(RUNS), outputs
    rerun = run_sweep(campaign, root)
    assert rerun.returncode == 0 and "0 of 4 runs to do" in rerun.stdout


def test_sigterm_to_the_driver_ends_its_training_processes(tmp_path):
    campaign = write_campaign(tmp_path, total=200_000, every=100_000)
    root = tmp_path / "results"
    driver = subprocess.Popen(
        sweep_command(campaign, root, "--jobs", "2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    marker = str(root / "tiny")
    wait_for(lambda: len(training_processes(marker)) == 2, 60, "two training processes")
    driver.send_signal(signal.SIGTERM)
    out = driver.communicate(timeout=60)[0]
    assert driver.returncode == 128 + signal.SIGTERM, out
    assert "SIGTERM: ending the runs in flight" in out
    wait_for(lambda: not training_processes(marker), 15, "the training processes to end")


def test_a_driver_killed_outright_takes_its_training_processes_with_it(tmp_path):
    campaign = write_campaign(tmp_path, total=200_000, every=100_000)
    root = tmp_path / "results"
    driver = subprocess.Popen(
        sweep_command(campaign, root, "--jobs", "1"), stdout=subprocess.DEVNULL
    )
    marker = str(root / "tiny")
    wait_for(lambda: training_processes(marker), 60, "a training process")
    driver.kill()
    driver.wait()
    wait_for(lambda: not training_processes(marker), 15, "the orphaned training process to die")


def test_a_kill_during_metrics_writes_leaves_a_whole_file(tmp_path):
    """SIGKILL a process that appends evaluation rows as fast as it can: whenever it dies, the
    CSV on disk is a complete file holding a prefix of the rows."""
    writer = textwrap.dedent(
        f"""
        from pathlib import Path
        from qmp_harness.run_logging import RunLogger
        class Args: pass
        logger = RunLogger.__new__(RunLogger)
        logger.run_dir = Path({str(tmp_path)!r})
        logger.csv_path = logger.run_dir / "metrics.csv"
        step = 0
        while True:
            step += 1
            rows = logger.read_rows() + [{{"global_step": step, "eval/x": step * 0.5}}]
            logger._write_rows(rows)
            print(step, flush=True)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    for _ in range(40):  # let it write 40 times, then kill it wherever it is
        process.stdout.readline()
    process.kill()
    process.wait()
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["global_step"]) for r in rows]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 40
    assert all(float(r["eval/x"]) == 0.5 * int(r["global_step"]) for r in rows)


def test_an_empty_timing_file_is_reported_and_the_run_completed(reference_campaign, tmp_path):
    campaign, reference = reference_campaign
    root = tmp_path / "results"
    shutil.copytree(reference, root)
    timing = root / "tiny" / "with_qmp" / "seed_1" / "timing.json"
    timing.write_text("")
    done = run_sweep(campaign, root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{timing} is damaged" in done.stdout and "1 of 4 runs to do" in done.stdout
    assert json.loads(timing.read_text())["env_steps"] == 600
    assert metrics_rows(timing.parent) == metrics_rows(reference / "tiny" / "with_qmp" / "seed_1")


def test_stray_and_truncated_checkpoints_never_stop_the_campaign(reference_campaign, tmp_path):
    """The newest checkpoint of one run is truncated and a stray copy lies beside it; another
    run has only stray files. The campaign resumes the first from its older checkpoint and
    restarts the second, and both end equal to the uninterrupted runs."""
    campaign, reference = reference_campaign
    root = tmp_path / "results"
    shutil.copytree(reference, root)
    damaged = root / "tiny" / "with_qmp" / "seed_2"
    checkpoints = damaged / "checkpoints"
    newest = checkpoints / "step_600.pt"
    shutil.copy(newest, checkpoints / "step_600 (copy).pt")
    newest.write_bytes(newest.read_bytes()[:100_000])
    (damaged / "timing.json").unlink()
    stray_only = root / "tiny" / "without_qmp" / "seed_1"
    for path in (stray_only / "checkpoints").iterdir():
        path.rename(path.with_name(path.stem + " (copy).pt"))
    (stray_only / "timing.json").unlink()

    done = run_sweep(campaign, root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ignoring {checkpoints / 'step_600 (copy).pt'}" in done.stdout
    assert f"checkpoint {newest} is unreadable" in done.stdout
    for run_dir in (damaged, stray_only):
        folder = run_dir.relative_to(root)
        assert metrics_rows(run_dir) == metrics_rows(reference / folder)
        assert (run_dir / "selection.jsonl").read_text() == (
            reference / folder / "selection.jsonl"
        ).read_text()
    segments = [json.loads(s) for s in (damaged / "provenance.jsonl").read_text().splitlines()]
    assert [s["from_step"] for s in segments] == [0, 300]  # resumed from the older checkpoint
