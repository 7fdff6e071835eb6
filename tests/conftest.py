import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest
import torch
from diffusers import UNet2DModel

from datasetddpm.generators.diffusion import DiffusionGenerator, save_checkpoint

def run(*args):
    """The CLI in-process (typer's CliRunner); arguments may be paths or numbers."""
    from typer.testing import CliRunner
    from datasetddpm.cli.main import get_app
    return CliRunner().invoke(get_app(), [str(a) for a in args])


def one_line_error(result, *needles):
    """Exit code 2 and exactly one line, 'Error: ...', containing every needle."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def assert_study_outputs(out, view: str) -> None:
    """A study folder holds study.json, study.md (the table its JSON renders) and study.png (the picture its
    JSON draws, pixel for pixel)."""
    import io
    import numpy as np
    from PIL import Image
    from datasetddpm.reporting.results import draw, render
    out = Path(out)
    assert (out / "study.md").read_text().rstrip("\n") in render(out / "study.json", view)
    with Image.open(out / "study.png") as saved, Image.open(io.BytesIO(draw(out / "study.json", view))) as drawn:
        assert saved.size == drawn.size and saved.size[0] >= 400
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(drawn.convert("RGB")))


def finished_run(root, model, ensemble, n: int, batch: int):
    """A sampled, labelled (fused) and finalized run of n tiny samples in `root`, shards of one batch."""
    assert run("sample", "--out", root, "--n", n, "--model", model, "--sampling-steps", 2, "--batch-size", batch,
               "--shard-size", batch, "--ensemble", ensemble, "--threads", 1, "--quiet").exit_code == 0
    assert run("finalize", "--out", root).exit_code == 0
    return root


def tree_state(root) -> dict:
    """Every path under root with its bytes (None for folders): compare before/after a refused command."""
    from pathlib import Path
    root = Path(root)
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


# Tests use tiny tensors: one thread avoids oversubscription stalls on a busy 2-core machine.
torch.set_num_threads(1)

TINY_UNET = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(8, 16, 16), layers_per_block=1,
                 down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3, norm_num_groups=4)
SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="linear")


def tiny_unet(seed: int = 0, **overrides) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(**{**TINY_UNET, **overrides})


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random diffusion checkpoint in the toolkit's format."""
    directory = tmp_path_factory.mktemp("tiny_model")
    save_checkpoint(directory, tiny_unet(), SCHEDULER)
    return directory


@pytest.fixture()
def tiny_generator():
    return DiffusionGenerator(tiny_unet(), SCHEDULER)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """The embedded domain in the reference layout: 4 train + 4 test images at 32 px."""
    from datasetddpm.data.folders import write_procedural_dataset
    root = tmp_path_factory.mktemp("data")
    write_procedural_dataset(root, train=4, test=4)
    return root


@pytest.fixture(scope="session")
def tiny_ensemble(tiny_model_dir, tmp_path_factory):
    """A random-weight ensemble over the tiny model's blocks 1, 4 at t=50 (labels are arbitrary but deterministic)."""
    from datasetddpm.ensemble.model import EnsembleConfig, PixelEnsemble, save_ensemble
    directory = tmp_path_factory.mktemp("ens")
    cfg = EnsembleConfig(in_dim=16 + 8, num_classes=7, members=3, features={"blocks": [1, 4], "steps": [50],
                         "noise_seed": 0}, model=str(tiny_model_dir), class_names=tuple("abcdefg"))
    save_ensemble(directory, PixelEnsemble(cfg, seed=1).eval())
    return directory


@pytest.fixture(autouse=True)
def _fp32_after_each_test():
    """A command's --precision applies to its whole process (as --threads does): CliRunner tests share one."""
    yield
    from datasetddpm.generators import loading
    loading.set_process_precision("fp32")
