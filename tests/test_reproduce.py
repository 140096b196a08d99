"""The results driver: fresh starts, resumes, skipping finished runs, and the report."""

import csv
import shutil
import sys

import pytest

from cleanrl_qmp import reproduce
from cleanrl_qmp.reproduce import Experiment, Method

TINY = Experiment(
    env_id="qmp/MultistageReacher-v0",
    total_timesteps=400,
    seeds=(1,),
    methods=(
        Method("with_qmp", "sac_qmp.py", ("--qmp",)),
        Method("without_qmp", "sac_qmp.py", ("--no-qmp",)),
    ),
    checkpoint_every=200,
    common_flags=(
        "--learning-starts", "100",
        "--batch-size", "16",
        "--hidden", "32", "32",
        "--eval-every", "200",
        "--eval-episodes", "1",
    ),
)  # fmt: skip


@pytest.fixture
def tiny_experiment(monkeypatch):
    monkeypatch.setitem(reproduce.EXPERIMENTS, "tiny", TINY)
    return TINY


def test_command_starts_fresh_then_resumes_from_the_newest_checkpoint(tmp_path):
    run_dir = tmp_path / "with_qmp" / "seed_1"
    fresh = reproduce.run_command(TINY, TINY.methods[0], 1, run_dir)
    assert fresh[fresh.index("--run-dir") + 1] == str(run_dir)
    assert fresh[fresh.index("--seed") + 1] == "1"
    assert "--qmp" in fresh and "--resume" not in fresh
    assert not reproduce.is_finished(TINY, run_dir)

    (run_dir / "checkpoints").mkdir(parents=True)
    for step in (200, 1000, 400):  # newest by step number, not by name order
        (run_dir / "checkpoints" / f"step_{step}.pt").touch()
    resumed = reproduce.run_command(TINY, TINY.methods[0], 1, run_dir)
    assert resumed[resumed.index("--resume") + 1].endswith("step_1000.pt")
    assert reproduce.is_finished(TINY, run_dir)


def test_runs_side_by_side_skips_finished_runs_and_reports(tiny_experiment, tmp_path, capsys):
    assert reproduce.run_all("tiny", tmp_path, jobs=2) == []
    for method in ("with_qmp", "without_qmp"):
        run_dir = tmp_path / "tiny" / method / "seed_1"
        # --keep-checkpoints 1: only the final checkpoint is left.
        assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step_400.pt"]
        with (run_dir / "metrics.csv").open() as f:
            assert [int(r["global_step"]) for r in csv.DictReader(f)] == [200, 400]

    capsys.readouterr()
    assert reproduce.run_all("tiny", tmp_path, jobs=2) == []
    assert "0 runs to do" in capsys.readouterr().out
    # A clone holds the committed results without their (ignored) checkpoints: still finished.
    for checkpoints in (tmp_path / "tiny").glob("*/seed_1/checkpoints"):
        shutil.rmtree(checkpoints)
    assert reproduce.run_all("tiny", tmp_path, jobs=2) == []
    assert "0 runs to do" in capsys.readouterr().out

    # An unfinished run (no final checkpoint yet) stays out of the report.
    partial = tmp_path / "tiny" / "with_qmp" / "seed_2"
    partial.mkdir(parents=True)
    for name in ("metrics.csv", "args.json"):
        (partial / name).write_text((tmp_path / "tiny" / "with_qmp" / "seed_1" / name).read_text())
    reproduce.report("tiny", tmp_path)
    assert "1 unfinished runs left out" in capsys.readouterr().out
    with (tmp_path / "tiny" / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["method"] for r in rows) == ["sac_qmp (no QMP)", "sac_qmp + QMP"]
    assert all(r["seeds"] == "1" and r["final_env_steps"] == "400" for r in rows)
    pngs = sorted(p.name for p in (tmp_path / "tiny").glob("*.png"))
    assert "learning_curves.png" in pngs and "learning_curves_return_mean.png" in pngs


def test_a_failing_run_is_reported_not_hidden(tiny_experiment, tmp_path, monkeypatch):
    broken = Experiment(**{**TINY.__dict__, "common_flags": ("--batch-size", "not-a-number")})
    monkeypatch.setitem(reproduce.EXPERIMENTS, "tiny", broken)
    failures = reproduce.run_all("tiny", tmp_path, jobs=1)
    assert failures == ["with_qmp seed 1", "without_qmp seed 1"]
    assert "not-a-number" in (tmp_path / "tiny" / "with_qmp" / "seed_1" / "train.log").read_text()


def test_seed_selection_is_checked_against_the_experiment(tiny_experiment, tmp_path):
    with pytest.raises(ValueError, match=r"seeds \[1\], not \[7\]"):
        reproduce.run_all("tiny", tmp_path, jobs=1, seeds=[1, 7])
    with pytest.raises(ValueError, match=r"not \['qmp'\]"):
        reproduce.run_all("tiny", tmp_path, jobs=1, methods=["with_qmp", "qmp"])
    assert not (tmp_path / "tiny").exists()


def test_a_method_subset_runs_only_those_methods(tiny_experiment, tmp_path, monkeypatch):
    # A flag the script rejects makes each run fail at once: enough to see which ones started.
    broken = Experiment(**{**TINY.__dict__, "common_flags": ("--batch-size", "not-a-number")})
    monkeypatch.setitem(reproduce.EXPERIMENTS, "tiny", broken)
    failures = reproduce.run_all("tiny", tmp_path, jobs=1, methods=["without_qmp"])
    assert failures == ["without_qmp seed 1"]
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["without_qmp"]


def test_each_run_gets_the_asked_thread_count(tmp_path):
    log = tmp_path / "train.log"
    code = "import os; print(os.environ['OMP_NUM_THREADS'], os.environ['MKL_NUM_THREADS'])"
    assert reproduce.launch([sys.executable, "-c", code], log, threads=3) == 0
    assert log.read_text().splitlines()[-1] == "3 3"


def test_readme_copies_are_refreshed_from_their_files(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.md").write_text("| new |\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro\n<!-- copied from results/table.md -->\n| old |\n| rows |\n"
        "<!-- end of copy -->\nend\n"
    )
    assert reproduce.refresh_readme_copies(readme) == ["results/table.md"]
    assert readme.read_text() == (
        "intro\n<!-- copied from results/table.md -->\n| new |\n<!-- end of copy -->\nend\n"
    )
    readme.write_text("<!-- copied from results/gone.md -->\n<!-- end of copy -->\n")
    with pytest.raises(FileNotFoundError, match="gone.md"):
        reproduce.refresh_readme_copies(readme)
