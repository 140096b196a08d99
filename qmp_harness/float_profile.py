"""Which code paths compute a run's floats, and how to pin them across x86 processors.

A seeded run is bit-reproducible on one machine, but the same seed can give different last
digits on another x86 processor because several libraries pick their kernels by the
instruction set they find at run time:

- torch's ATen picks its vectorised CPU kernels (``default``, ``avx2``, ``avx512``);
  ``ATEN_CPU_CAPABILITY`` caps the choice;
- MKL (torch's BLAS here) picks its GEMM code path; ``MKL_CBWR`` fixes it
  (conditional numerical reproducibility);
- oneDNN picks its JIT kernels; ``ONEDNN_MAX_CPU_ISA`` caps them;
- NumPy dispatches its ufuncs to ``X86_V3``/``X86_V4``/AVX-512 variants;
  ``NPY_DISABLE_CPU_FEATURES`` switches the AVX-512 ones off.

MuJoCo has no run-time dispatch (its wheel is compiled for one instruction set). Measured on an
AVX2 machine (``tests/scripts/golden``): capping ATen at ``default`` or setting
``MKL_CBWR=COMPATIBLE`` changes a golden run's floats, while ``avx2``/``AVX2`` give the same
bytes as no setting at all. So :data:`PINNED_ENVIRONMENT` makes every x86-64-v3 processor
(AVX2 + FMA, which includes the AVX-512 ones) take the code paths an AVX2-only processor takes.

Pinning is opt-in for training runs (it would change their numerics on AVX-512 machines, and
its speed cost is measured by ``benchmarks/float_profile_speed.py``); the golden-run test always
pins. ``python -m qmp_harness.float_profile`` prints this process's profile as JSON;
``--exports`` prints the shell lines that pin it.

>>> sorted(PINNED_ENVIRONMENT)
['ATEN_CPU_CAPABILITY', 'MKL_CBWR', 'NPY_DISABLE_CPU_FEATURES', 'ONEDNN_MAX_CPU_ISA']
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

# The settings that make an x86-64-v3 processor compute what an AVX2-only one computes.
PINNED_ENVIRONMENT: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}

# Instruction-set features that decide which kernels the libraries above may pick.
FLOAT_RELEVANT_FEATURES = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni",
    "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "avx512ifma", "avx512vbmi", "amx_tile", "amx_bf16",
)  # fmt: skip

LIBRARIES = ("torch", "numpy", "mujoco", "gymnasium", "metaworld")


def package_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """Each installed distribution's version (None where it is not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_features() -> list[str]:
    """The float-relevant instruction-set features this processor reports (Linux
    ``/proc/cpuinfo``), sorted; empty where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return sorted(f for f in FLOAT_RELEVANT_FEATURES if f in flags)
    return []


def can_pin() -> bool:
    """Whether :data:`PINNED_ENVIRONMENT` applies: an x86-64 processor with AVX2 and FMA."""
    features = set(cpu_features())
    return platform.machine().lower() in ("x86_64", "amd64") and {"avx2", "fma"} <= features


def pinned_environment() -> dict[str, str]:
    """:data:`PINNED_ENVIRONMENT` where this processor supports it, else ``{}``."""
    return dict(PINNED_ENVIRONMENT) if can_pin() else {}


def code_paths() -> dict[str, object]:
    """The kernels this process really uses: ATen's capability, MKL's reproducibility branch,
    oneDNN's cap, NumPy's enabled dispatch targets, and the libraries' versions. Two processes
    with equal code paths compute the same floats."""
    import torch

    # NumPy 2 keeps its dispatch tables in numpy._core, NumPy 1 in numpy.core.
    try:
        umath = importlib.import_module("numpy._core._multiarray_umath")
    except ImportError:
        umath = importlib.import_module("numpy.core._multiarray_umath")
    enabled = umath.__cpu_features__
    versions = package_versions(LIBRARIES)
    return {
        "machine": platform.machine(),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl": torch.backends.mkl.is_available(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", ""),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "numpy_dispatch": sorted(t for t in umath.__cpu_dispatch__ if enabled.get(t)),
        "versions": versions,
    }


def float_profile() -> dict[str, object]:
    """What decides this process's floats: :func:`code_paths` plus the processor's features."""
    return {"code_paths": code_paths(), "cpu_features": cpu_features()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--exports", action="store_true", help="print `export` lines that pin the profile"
    )
    args = parser.parse_args(argv)
    if args.exports:
        if not can_pin():
            print("# this processor has no AVX2+FMA: nothing to pin", file=sys.stderr)
        for key, value in pinned_environment().items():
            print(f"export {key}='{value}'")
        return 0
    print(json.dumps(float_profile(), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
