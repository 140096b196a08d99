"""The docs' policy GIFs: the actor rebuilt from a checkpoint acts as the run's actor did."""

from __future__ import annotations

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
