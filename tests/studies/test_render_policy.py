"""The docs' policy GIFs: the actor rebuilt from a checkpoint acts as the run's actor did."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from qmp_harness.checkpoints import load_newest_checkpoint
from qmp_studies.render_policy import actor_of, shrink


def test_actor_of_rebuilds_the_checkpoints_actor(reference_campaign):
    _, results = reference_campaign
    _, checkpoint = load_newest_checkpoint(results / "tiny" / "with_qmp" / "seed_1")
    actor = actor_of(checkpoint)
    for name, tensor in actor.state_dict().items():
        assert torch.equal(tensor, checkpoint["actor"][name]), name
    obs = torch.zeros(5, 23)
    obs[torch.arange(5), 18 + torch.arange(5)] = 1.0
    actions = actor.deterministic_act(obs)
    assert actions.shape == (5, 6) and bool((actions.abs() <= 1).all())


def test_actor_of_refuses_a_script_it_cannot_rebuild(reference_campaign):
    _, results = reference_campaign
    _, checkpoint = load_newest_checkpoint(results / "tiny" / "with_qmp" / "seed_1")
    with pytest.raises(ValueError, match="cannot rebuild"):
        actor_of({**checkpoint, "script": "other.py"})


def test_shrink_keeps_about_the_asked_width():
    frame = np.zeros((480, 480, 3), dtype=np.uint8)
    assert shrink(frame, 160).shape == (160, 160, 3)
    assert shrink(frame, 1000).shape == frame.shape


@pytest.mark.parametrize("tool", ["render_policy", "qswitch_scores"])
def test_a_missing_or_damaged_checkpoint_is_one_line_naming_it(tmp_path, tool, capsys):
    import importlib

    main = importlib.import_module(f"qmp_studies.{tool}").main
    damaged = tmp_path / "run" / "checkpoints" / "step_100.pt"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"truncated")
    out = ["--out", str(tmp_path / "gifs")] if tool == "render_policy" else []
    for target, named in [(tmp_path / "nowhere", "does not exist"), (damaged.parent.parent, "")]:
        with pytest.raises(SystemExit) as stopped:
            main([str(target), *out])
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and "Traceback" not in err
        assert "error: " in err and named in err and str(tmp_path) in err
    assert not (tmp_path / "gifs").exists()


def test_qswitch_scores_refuses_shared_networks_and_zero_states(
    reference_campaign, tmp_path, monkeypatch, capsys
):
    from qmp_studies import qswitch_scores

    _, results = reference_campaign
    run = tmp_path / "run"
    shutil.copytree(results / "tiny" / "with_qmp" / "seed_1", run)
    path, checkpoint = load_newest_checkpoint(run)
    monkeypatch.setattr(
        qswitch_scores,
        "load_newest_checkpoint",
        lambda _: (path, {**checkpoint, "script": "mtsac_qmp.py"}),
    )
    for flags, message in [
        ([], "a checkpoint of mtsac_qmp.py; the Q-switch scores need per-task networks"),
        (["--states", "0"], "--states: must be an integer >= 1"),
    ]:
        with pytest.raises(SystemExit) as stopped:
            qswitch_scores.main([str(run), *flags])
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and message in err and "Traceback" not in err
    assert not (run / "qswitch_scores.md").exists()
