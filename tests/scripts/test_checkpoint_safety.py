"""A checkpoint cannot run code, a resume cannot mislead, and only damaged files are set aside.

Each refusal happens before the run folder changes: the tests compare the folder's bytes."""

from __future__ import annotations

import hashlib
import os
import struct
import zipfile
from pathlib import Path

import pytest
import torch

import qmp_wrappers.switch
from cleanrl_qmp import mtsac_qmp, sac_qmp
from qmp_harness.checkpoints import (
    CheckpointLoadError,
    UnsafeCheckpointError,
    load_checkpoint,
    load_newest_checkpoint,
)
from qmp_harness.config import parse_command_line

TINY = ["--total-timesteps", "300", "--learning-starts", "100", "--batch-size", "16",
        "--hidden", "32", "32", "--eval-every", "300", "--eval-episodes", "1",
        "--checkpoint-every", "150", "--keep-checkpoints", "0", "--no-progress"]  # fmt: skip


RUN_FLAGS = ["--no-qmp", "--seed", "3", "--gamma", "0.95", "--qmp-scoring", "min_twin"]


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def refused(script, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        script.main(parse_command_line(script.Args, argv))
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def no_qmp_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "noqmp"
    sac_qmp.main(parse_command_line(sac_qmp.Args, [*TINY, *RUN_FLAGS, "--run-dir", str(run_dir)]))
    return run_dir


def resaved(run_dir: Path, edit) -> Path:
    """The run's step-300 checkpoint rewritten with ``edit`` applied to its payload."""
    path = run_dir / "checkpoints" / "step_300.pt"
    payload = load_checkpoint(path)
    edit(payload)
    torch.save(payload, path)
    return path


class WritesAFile:
    """Unpickling this runs ``os.system``: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "run" / "checkpoints" / "step_300.pt"
    path.parent.mkdir(parents=True)
    torch.save({"args": {}, "payload": WritesAFile(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"refusing (posix|os)\.system"):
        load_checkpoint(path)
    assert not marker.exists()
    # Through --resume: exit 2 naming the global, the file left where it is, no code run.
    err = refused(sac_qmp, ["--resume", str(path), "--no-progress"], capsys)
    assert "system" in err and str(path) in err
    assert path.is_file() and not marker.exists()


def test_every_suites_real_checkpoint_passes_the_allow_list(no_qmp_run):
    checkpoint = load_checkpoint(no_qmp_run / "checkpoints" / "step_300.pt")
    assert checkpoint["script"] == "sac_qmp.py" and checkpoint["envs"].num_envs == 5


@pytest.mark.parametrize(
    "argv", [["--qmp"], ["--seed", "1"], ["--gamma", "0.99"], ["--qmp-scoring", "original"]]
)
def test_an_explicit_flag_equal_to_its_default_is_checked_against_the_checkpoint(
    no_qmp_run, argv, capsys
):
    """Each flag here is given at its default value, and the run differs there (``--no-qmp
    --seed 3 --gamma 0.95 --qmp-scoring min_twin``): all are refused, not silently ignored."""
    before = snapshot(no_qmp_run)
    name = argv[0][2:].replace("-", "_")
    default = getattr(sac_qmp.Args(), name)
    assert default == (True if len(argv) == 1 else type(default)(argv[1]))
    checkpoint = str(no_qmp_run / "checkpoints" / "step_150.pt")
    err = refused(sac_qmp, ["--resume", checkpoint, *argv], capsys)
    assert "contradict" in err and f"{argv[0]}" in err and "the checkpoint's run has" in err
    assert snapshot(no_qmp_run) == before


def test_explicit_flags_that_agree_with_the_checkpoint_resume(no_qmp_run, tmp_path):
    run_dir = tmp_path / "run"
    os.system(f"cp -r {no_qmp_run} {run_dir}")
    argv = ["--resume", str(run_dir / "checkpoints" / "step_150.pt"), "--no-qmp", "--seed", "3"]
    sac_qmp.main(parse_command_line(sac_qmp.Args, argv))
    assert (run_dir / "timing.json").is_file()


def test_a_checkpoint_whose_args_disagree_with_its_networks_is_named(no_qmp_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    os.system(f"cp -r {no_qmp_run} {run_dir}")
    path = resaved(run_dir, lambda p: p["args"].update(env_id="qmp/PointReach-v0"))
    # Without the run's record of its start, which would refuse it first (test_failure_modes_runs).
    (run_dir / "args.json").unlink()
    before = snapshot(run_dir)
    err = refused(sac_qmp, ["--resume", str(path)], capsys)
    assert "does not fit sac_qmp.py with --env-id qmp/PointReach-v0" in err
    assert "actor differs" in err and "checkpoint (" in err
    assert snapshot(run_dir) == before


def test_an_older_checkpoint_resumed_by_another_script_is_named(no_qmp_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    os.system(f"cp -r {no_qmp_run} {run_dir}")
    path = resaved(run_dir, lambda p: p.pop("script"))  # older checkpoints have no script
    before = snapshot(run_dir)
    err = refused(mtsac_qmp, ["--resume", str(path)], capsys)
    assert "does not fit mtsac_qmp.py" in err and "older version" in err
    assert snapshot(run_dir) == before


def test_a_checkpoint_with_a_missing_part_leaves_the_folder_untouched(no_qmp_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    os.system(f"cp -r {no_qmp_run} {run_dir}")
    path = resaved(run_dir, lambda p: p.pop("rb"))
    before = snapshot(run_dir)
    err = refused(sac_qmp, ["--resume", str(path)], capsys)
    assert "missing part 'rb'" in err
    assert snapshot(run_dir) == before  # no new TensorBoard file, metrics not rewritten


class MovedAway:
    """Stands for a class a code change moved: its checkpoint is intact but does not load."""


def test_a_checkpoint_that_fails_for_a_non_file_reason_is_not_renamed(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({"step": 100}, folder / "step_100.pt")
    MovedAway.__module__ = "qmp_wrappers.switch"
    qmp_wrappers.switch.MovedAway = MovedAway  # type: ignore[attr-defined]
    try:
        torch.save({"state": MovedAway()}, folder / "step_200.pt")
    finally:
        del qmp_wrappers.switch.MovedAway  # type: ignore[attr-defined]
    with pytest.raises(CheckpointLoadError, match="step_200.pt did not load.*MovedAway"):
        load_newest_checkpoint(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["step_100.pt", "step_200.pt"]


def test_damaged_files_are_set_aside_and_the_next_older_one_is_used(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for step in (100, 200, 300):
        torch.save({"step": step, "weights": torch.arange(1000.0)}, folder / f"step_{step}.pt")
    # step_300: one flipped byte inside the pickled data (the zip's CRC-32 no longer matches).
    with zipfile.ZipFile(folder / "step_300.pt") as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("data.pkl"))
    data = bytearray((folder / "step_300.pt").read_bytes())
    header = info.header_offset  # the local header: 30 bytes, the name, then an extra field
    name_length, extra_length = struct.unpack("<HH", data[header + 26 : header + 30])
    data[header + 30 + name_length + extra_length + 5] ^= 0xFF
    (folder / "step_300.pt").write_bytes(bytes(data))
    # step_200: truncated.
    whole = (folder / "step_200.pt").read_bytes()
    (folder / "step_200.pt").write_bytes(whole[: len(whole) // 2])
    messages: list[str] = []
    path, checkpoint = load_newest_checkpoint(folder, report=messages.append)
    assert path.name == "step_100.pt" and checkpoint["step"] == 100
    assert sorted(p.name for p in folder.iterdir()) == [
        "step_100.pt", "step_200.pt.corrupt", "step_300.pt.corrupt",
    ]  # fmt: skip
    assert any("step_300.pt" in m for m in messages) and any("step_200.pt" in m for m in messages)


def test_a_checkpoint_naming_the_harness_by_its_old_path_loads(tmp_path, monkeypatch):
    """Checkpoints written before the run harness left ``cleanrl_qmp`` name its classes as
    ``cleanrl_qmp.<module>``; they load, as the classes that now live in ``qmp_harness``."""
    import sys

    import gymnasium as gym
    import numpy as np

    import qmp_harness.tasks
    from qmp_harness.checkpoints import save_checkpoint
    from qmp_harness.tasks import TaskSpec

    box = gym.spaces.Box(-1.0, 1.0, (3,))
    spec = TaskSpec(2, ["a", "b"], 1, np.ones(3, dtype=bool), -1.0, box, box)
    with monkeypatch.context() as old_layout:  # pickle as the code before the move did
        old_layout.setitem(sys.modules, "cleanrl_qmp.tasks", qmp_harness.tasks)
        old_layout.setattr(TaskSpec, "__module__", "cleanrl_qmp.tasks")
        save_checkpoint(tmp_path / "step_1.pt", {"tasks": spec})
    with zipfile.ZipFile(tmp_path / "step_1.pt") as archive:
        pickled = next(archive.read(n) for n in archive.namelist() if n.endswith("data.pkl"))
    assert b"cleanrl_qmp.tasks" in pickled and b"qmp_harness" not in pickled
    assert "cleanrl_qmp.tasks" not in sys.modules
    loaded = load_checkpoint(tmp_path / "step_1.pt")["tasks"]
    assert type(loaded) is TaskSpec and loaded.task_names == ["a", "b"]
    assert loaded.observation_space == box and loaded.feature_mask.tolist() == [True] * 3
