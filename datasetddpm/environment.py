"""What the toolkit runs on: versions, devices, threads and the OpenMP wait policy (`datasetddpm env`)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from importlib import metadata

PACKAGES = ("datasetddpm", "torch", "torchvision", "diffusers", "segmentation-models-pytorch", "albumentations",
            "numpy", "safetensors")


def cpu_name() -> str:
    """The CPU model and the SIMD level torch dispatches to (e.g. "AMD EPYC, AVX2"): float sums round by
    the vector width, so a seeded run repeats bit for bit only on the same kind of CPU."""
    import torch
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.backends.cpu.get_cpu_capability()}"


def describe() -> dict:
    import torch
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"python": platform.python_version(), "platform": platform.platform(), **versions,
            "cpu": cpu_name(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: OpenMP default, active)"),
            "cuda": torch.version.cuda or "none", "gpus": gpus or "none visible",
            "nccl": torch.distributed.is_nccl_available() if torch.distributed.is_available() else False,
            "default_device": "cuda:0" if gpus else "cpu"}


def provenance(command: str | None = None) -> dict:
    """Where a result came from, recorded in every result JSON: the command line, the date, the machine."""
    import datetime
    import shlex
    import sys
    import torch
    if command is None:
        command = "datasetddpm " + shlex.join(sys.argv[1:]) if Path(sys.argv[0]).name == "datasetddpm" else ""
    gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or "no GPU"
    return {"command": command, "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {gpus}", "cpu": cpu_name(),
            "torch": torch.__version__, "embedded_weights": embedded_weights()}


def embedded_weights() -> dict[str, str]:
    """Short sha256 digests of the shipped weights: `embedded` names different models as they are retrained,
    so a result records which ones it used. The DDPM's digest also covers its sampling schedule (the
    scheduler section of its config, e.g. the timestep spacing), which changes its samples as its weights do."""
    import hashlib
    import json
    from .io import read_json
    from .paths import EMBEDDED_MODEL_DIR, EMBEDDED_ORACLE_DIR, EMBEDDED_STYLEGAN2_DIR
    digests = {}
    for name, folder in (("ddpm", EMBEDDED_MODEL_DIR), ("oracle", EMBEDDED_ORACLE_DIR),
                         ("stylegan2", EMBEDDED_STYLEGAN2_DIR)):
        files = sorted(folder.glob("*.safetensors"))
        if files:
            h = hashlib.sha256()
            for f in files:
                h.update(f.read_bytes())
            if name == "ddpm":
                scheduler = read_json(folder / "config.json")["scheduler"]
                h.update(json.dumps(scheduler, sort_keys=True).encode())
            digests[name] = h.hexdigest()[:12]
    return digests
