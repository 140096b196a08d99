"""The run harness beneath the training scripts of ``cleanrl_qmp/``: flags and presets
(``config``), the training loop's bookkeeping (``harness``), checkpoints, run files and the
run-folder lock, logging and the run's pictures, the memory estimate, the float profile and the
task layout. It imports neither the scripts nor the campaign layer above them."""
