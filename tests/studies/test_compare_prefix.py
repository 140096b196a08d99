"""compare_prefix: a rerun's shared prefix against its committed run, row by row."""

import pytest

from qmp_studies import compare_prefix

CAMPAIGN = """
env_ids = ["qmp/MultistageReacher-v0"]
total_timesteps = {steps}
seeds = [1, 2]
checkpoint_every = 20

[[methods]]
name = "no_sharing"
script = "sac_qmp.py"
flags = ["--no-qmp"]
"""
HEADER = "global_step,time,eval/success_mean,eval/return_mean\n"


def write(path, rows):
    path.mkdir(parents=True)
    (path / "metrics.csv").write_text(HEADER + "".join(f"{r}\n" for r in rows))


def test_identical_and_differing_prefixes(tmp_path, capsys):
    (tmp_path / "short.toml").write_text(CAMPAIGN.format(steps=40))
    (tmp_path / "long.toml").write_text(CAMPAIGN.format(steps=60))
    root = tmp_path / "results"
    write(root / "short/no_sharing/seed_1", ["20,1.0,0.1,-5.0", "40,2.0,0.2,-4.0"])
    write(root / "long/no_sharing/seed_1", ["20,9.0,0.1,-5.0", "40,9.5,0.2,-4.0", "60,9,1,0"])
    write(root / "short/no_sharing/seed_2", ["20,1.0,0.1,-5.0", "40,2.0,0.2,-4.0"])
    write(root / "long/no_sharing/seed_2", ["20,1.0,0.1,-5.0", "40,2.0,0.3,-4.000001"])
    args = [str(tmp_path / "short.toml"), str(tmp_path / "long.toml"), "--root", str(root)]
    compare_prefix.main(args)
    text = (root / "long" / "prefix_vs_short.md").read_text()
    assert capsys.readouterr().out.strip() == text.strip()
    _, (same, apart) = compare_prefix.report(args[0], args[1], root, None)
    assert same.identical and same.rows == 2 and same.first_difference is None  # time ignored
    assert not apart.identical and apart.first_difference == 40
    assert apart.max_abs_success == pytest.approx(0.1)
    assert apart.max_abs_return == pytest.approx(1e-6)
    assert apart.max_rel == pytest.approx(0.1 / 0.3)
    assert "1 of 2 runs identical" in text


def test_different_evaluation_steps_are_an_error(tmp_path):
    (tmp_path / "short.toml").write_text(CAMPAIGN.format(steps=40))
    (tmp_path / "long.toml").write_text(CAMPAIGN.format(steps=60))
    root = tmp_path / "results"
    write(root / "short/no_sharing/seed_1", ["20,1,0,0", "40,1,0,0"])
    write(root / "long/no_sharing/seed_1", ["30,1,0,0", "40,1,0,0"])
    with pytest.raises(ValueError, match=r"different steps up to 40: \[20, 30\]"):
        compare_prefix.report(str(tmp_path / "short.toml"), str(tmp_path / "long.toml"), root, None)
    with pytest.raises(SystemExit, match="share no run"):
        compare_prefix.main([str(tmp_path / "short.toml"), str(tmp_path / "long.toml")])


def test_columns_only_the_rerun_logs_are_counted_not_compared(tmp_path):
    """A rerun that also evaluates something new (eval_mixture/) still reproduces the run if
    every column of the committed run is the same; a committed column it lacks is a difference."""
    (tmp_path / "short.toml").write_text(CAMPAIGN.format(steps=40))
    (tmp_path / "long.toml").write_text(CAMPAIGN.format(steps=60))
    root = tmp_path / "results"
    write(root / "short/no_sharing/seed_1", ["20,1.0,0.1,-5.0", "40,2.0,0.2,-4.0"])
    rerun = root / "long/no_sharing/seed_1"
    rerun.mkdir(parents=True)
    (rerun / "metrics.csv").write_text(
        "global_step,time,eval/success_mean,eval/return_mean,eval_mixture/success_mean\n"
        "20,3.0,0.1,-5.0,0.5\n40,4.0,0.2,-4.0,0.7\n"
    )
    write(root / "short/no_sharing/seed_2", ["20,1.0,0.1,-5.0"])
    lacking = root / "long/no_sharing/seed_2"
    lacking.mkdir(parents=True)
    (lacking / "metrics.csv").write_text("global_step,time,eval/success_mean\n20,1.0,0.1\n")
    _, (extra, missing) = compare_prefix.report(
        str(tmp_path / "short.toml"), str(tmp_path / "long.toml"), root, None
    )
    assert extra.identical and extra.added_columns == 1
    assert not missing.identical and missing.first_difference == 20


@pytest.mark.parametrize("up_to", ["0", "-5", "10"])
def test_a_prefix_with_nothing_to_compare_is_refused_not_reported_identical(
    tmp_path, capsys, up_to
):
    """--up-to 0 or below (0 read as 'the default' before) or below the first evaluation
    compared zero rows and wrote "2 of 2 runs identical" over the committed report."""
    (tmp_path / "short.toml").write_text(CAMPAIGN.format(steps=40))
    (tmp_path / "long.toml").write_text(CAMPAIGN.format(steps=60))
    root = tmp_path / "results"
    for seed in (1, 2):
        write(root / f"short/no_sharing/seed_{seed}", ["20,1.0,0.1,-5.0", "40,2.0,0.2,-4.0"])
        write(root / f"long/no_sharing/seed_{seed}", ["20,1.0,0.1,-5.0", "40,2.0,0.3,-4.0"])
    args = [str(tmp_path / "short.toml"), str(tmp_path / "long.toml"), "--root", str(root)]
    with pytest.raises(SystemExit) as stop:
        compare_prefix.main([*args, "--up-to", up_to])
    message = str(stop.value.code) + capsys.readouterr().err
    expected = "no evaluation at or before step 10" if up_to == "10" else "must be a step >= 1"
    assert expected in message
    assert not (root / "long" / "prefix_vs_short.md").exists()
