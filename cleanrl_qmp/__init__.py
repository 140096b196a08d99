"""The training scripts, one file per method (``sac_qmp.py``, ``mtsac_qmp.py``, ``uds_qmp.py``,
``dnc_sac.py``, ``ctpg_sac.py``), run as ``python cleanrl_qmp/<script>.py``, and the networks and
guide they read (``networks``, ``guidance``). What they share to run (flags, checkpoints, run
files, logging) is the harness beneath them, ``qmp_harness``."""
