"""--track logs to Weights & Biases as CleanRL does (offline here: no account, no network)."""

import tyro

from cleanrl_qmp import sac_qmp

TINY = ["--total-timesteps", "300", "--learning-starts", "100", "--batch-size", "16",
        "--hidden", "32", "32", "--eval-every", "150", "--eval-episodes", "1",
        "--log-every", "100", "--no-progress"]  # fmt: skip


def test_track_mirrors_the_run_into_an_offline_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    argv = [*TINY, "--track", "--wandb-project-name", "qmp-test", "--run-dir", str(run_dir)]
    sac_qmp.main(tyro.cli(sac_qmp.Args, args=argv))
    records = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(records) == 1, list(run_dir.rglob("*"))
    data = records[0].read_bytes()
    # The TensorBoard scalars (CleanRL's names and ours) and the configuration were recorded.
    for key in (b"charts/SPS", b"eval/success_mean", b"losses/qf_loss", b"qmp-test"):
        assert key in data, key
    run_id = (run_dir / "wandb_id").read_text()
    assert records[0].name == f"run-{run_id}.wandb"
