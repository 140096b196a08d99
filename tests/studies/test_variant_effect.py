"""variant_effect: a variant campaign's runs beside the same seeds of its base campaign."""

import pytest

from qmp_studies import variant_effect

CAMPAIGN = """
env_ids = ["qmp/MultistageReacher-v0"]
total_timesteps = {steps}
seeds = [1, 2, 3]
checkpoint_every = 20

[[methods]]
name = "no_sharing"
script = "sac_qmp.py"
flags = {flags}
"""
HEADER = "global_step,time,eval/success/a,eval/success/b\n"


def write_run(path, rows, finished=True):
    """rows: (step, success of task a, success of task b)."""
    path.mkdir(parents=True)
    (path / "metrics.csv").write_text(HEADER + "".join(f"{s},0,{a},{b}\n" for s, a, b in rows))
    if finished:
        (path / "timing.json").write_text("{}")


@pytest.fixture
def campaigns(tmp_path):
    (tmp_path / "base.toml").write_text(CAMPAIGN.format(steps=40, flags='["--no-qmp"]'))
    variant_flags = '["--no-qmp", "--init", "xavier"]'
    (tmp_path / "variant.toml").write_text(CAMPAIGN.format(steps=60, flags=variant_flags))
    return str(tmp_path / "base.toml"), str(tmp_path / "variant.toml"), tmp_path / "results"


def test_seed_by_seed_effect_up_to_the_shorter_budget(campaigns, capsys):
    base, variant, root = campaigns
    write_run(root / "base/no_sharing/seed_1", [(20, 0.0, 0.0), (40, 0.5, 0.5)])
    # The variant's step 60 lies past the base's budget: it is not compared.
    write_run(root / "variant/no_sharing/seed_1", [(20, 0.5, 0.5), (40, 1.0, 0.0), (60, 0, 0)])
    write_run(root / "base/no_sharing/seed_2", [(20, 0.0, 0.0), (40, 1.0, 1.0)])
    write_run(root / "variant/no_sharing/seed_2", [(20, 0.0, 0.0), (40, 0.5, 0.5)])
    write_run(root / "base/no_sharing/seed_3", [(20, 1.0, 1.0), (40, 1.0, 1.0)])
    write_run(root / "variant/no_sharing/seed_3", [(20, 1.0, 1.0)], finished=False)

    variant_effect.main([base, variant, "--root", str(root), "--last", "1"])
    text = (root / "variant" / "vs_base.md").read_text()
    assert capsys.readouterr().out.strip() == text.strip()
    assert "up to step 40" in text
    # seed 1: final 50 -> 50, curve mean 25 -> 50 (mean over tasks, last 1 evaluation)
    assert "| No-Sharing | 1 | 50 | 50 | +0 | 25 | 50 | +25 |" in text
    assert "| No-Sharing | 2 | 100 | 50 | -50 | 50 | 25 | -25 |" in text
    assert "| No-Sharing | 3 |" not in text  # the variant's seed 3 has not finished
    assert "| No-Sharing | 1, 2 | -25 (-50 to +0) | +0 (-25 to +25) | 0 of 2 |" in text
    assert (root / "variant" / "vs_base.png").stat().st_size > 0

    pairs, up_to = variant_effect.paired_runs(base, variant, root)
    assert up_to == 40 and [p.seed for p in pairs] == [1, 2]
    assert pairs[0].variant.reaches(0.5) == 20 and pairs[0].base.reaches(0.5) == 40
    assert pairs[0].base.reaches(0.9) is None


def test_nothing_shared_or_bad_flags_are_clear_errors(campaigns):
    base, variant, root = campaigns
    write_run(root / "base/no_sharing/seed_1", [(20, 0.0, 0.0)])
    with pytest.raises(SystemExit, match="share no finished run"):
        variant_effect.main([base, variant, "--root", str(root)])
    with pytest.raises(SystemExit):
        variant_effect.main([base, variant, "--last", "0"])
    write_run(root / "variant/no_sharing/seed_1", [(60, 0.0, 0.0)])
    with pytest.raises(SystemExit, match=r"metrics.csv: no evaluation at or before step 40"):
        variant_effect.main([base, variant, "--root", str(root)])
