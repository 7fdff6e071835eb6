"""The paper's labeller protocol: export a few generated samples for annotators (DatasetGAN style).

`export_for_annotation` writes K samples in the labelled-folder layout (`<stem>.png`, seeds in
`samples.json`); annotators add `<stem>.npy` or `<stem>_mask.png`. On the embedded domain the
oracle segmenter plays the annotator (`oracle=`), so the paper's protocol runs end to end here.
A latent-based generator (StyleGAN2, DatasetGAN mode) also gets `latents.safetensors` (each sample's
z and w): its features are taken from those latents, since its images cannot be featurised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.images import write_image
from ..errors import InputError
from ..generators.stylegan2 import NO_LATENT
from ..io import atomic_path, load_tensors, read_json, save_tensors, write_json
from ..seeds import sample_in_full_batches, stream_seed
LATENTS_FILE = "latents.safetensors"  # latent-based generators: z and w of every exported sample


def export_for_annotation(generator, k: int, out_dir: str | Path, *, seed: int = 0, sampler: str = "ddim",
                          num_steps: int = 50, batch_size: int = 50, oracle=None, labeller=None) -> list[Path]:
    out = Path(out_dir)
    seeds = [stream_seed(seed, "annotation", i) for i in range(k)]  # never the images of any run
    images = torch.cat(list(sample_in_full_batches(generator, seeds, batch_size, sampler=sampler,
                                                   num_steps=num_steps)))
    masks = None
    if oracle is not None:
        from ..segmenters.model import predict
        masks = predict(oracle, images).numpy().astype(np.uint8)
    paths = []
    for i, im in enumerate(images.permute(0, 2, 3, 1).numpy()):
        path = out / f"sample_{i:05d}.png"
        write_image(path, im)
        if masks is not None:
            with atomic_path(path.with_suffix(".npy")) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, masks[i])
        paths.append(path)
    if getattr(generator, "latent_based", False):
        save_tensors(out / LATENTS_FILE, {"z": generator.z(seeds), "w": generator.latents(seeds).cpu()})
    write_json(out / "samples.json", {"model": generator.source, "sampler": sampler, "sampling_steps": num_steps,
                                      "seeds": seeds, "files": [p.name for p in paths],
                                      "annotated_by": "oracle" if oracle is not None else None})
    _write_preannotations(out, paths, images.permute(0, 2, 3, 1).numpy(), generator, oracle_masks=masks,
                          labeller=labeller)
    return paths


def _write_preannotations(out: Path, paths: list[Path], images: np.ndarray, generator, *, oracle_masks,
                          labeller) -> None:
    """The Label Studio and CVAT imports beside the samples: the ensemble's masks and uncertainty (with
    --ensemble), else the oracle's masks; without either, Label Studio tasks to label from scratch when the
    classes are known (the embedded domain's)."""
    from ..data.procedural import CLASS_NAMES
    from ..labelling_tools.preannotations import ensemble_classes, write_preannotations
    files = [p.name for p in paths]
    if labeller is not None:
        seg = labeller(images)
        write_preannotations(out, files, ensemble_classes(labeller.ensemble.cfg), masks=seg.labels,
                             scores=seg.image_uncertainty, ignore_label=labeller.ensemble.cfg.ignore_label,
                             model_version="datasetddpm ensemble")
    elif oracle_masks is not None or str(generator.source).startswith("embedded"):
        write_preannotations(out, files, list(CLASS_NAMES), masks=oracle_masks, model_version="datasetddpm oracle")


def attach_latents(generator, folder: str | Path, images: np.ndarray, paths: list[Path]) -> None:
    """Tell a latent-based generator the latents of a folder's images (an annotation export), so that
    their features can be computed; a no-op for diffusion. Refused in one line when the folder has no
    latents (real images: that would need GAN inversion), was exported from another model, or an image
    is not what its latent generates (edited, or renamed)."""
    if not getattr(generator, "latent_based", False):
        return
    folder = Path(folder)
    if not (folder / LATENTS_FILE).is_file() or not (folder / "samples.json").is_file():
        raise InputError(paths[0], f"{NO_LATENT} (no {LATENTS_FILE} beside it)")
    meta = read_json(folder / "samples.json")
    if meta.get("model") != generator.source:
        raise InputError(folder / "samples.json", f"samples of {meta.get('model')}, not of --model {generator.source}")
    row = {name: i for i, name in enumerate(meta.get("files") or [])}
    ws = load_tensors(folder / LATENTS_FILE)["w"]
    picked = []
    for p in paths:
        if p.name not in row or row[p.name] >= len(ws):
            raise InputError(p, f"{NO_LATENT} (not listed in {folder / 'samples.json'})")
        picked.append(row[p.name])
    ws = ws[picked]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    for i in range(0, len(ws), 50):
        made = generator.synthesize(ws[i:i + 50]).cpu()
        off = (made.int() - x[i:i + 50].int()).abs().flatten(1).amax(1)
        if (off > 2).any():  # > kernel rounding across devices
            j = i + int((off > 2).nonzero()[0])
            raise InputError(paths[j], "is not the image its latent generates (edited, renamed or from another "
                                       "model); export the samples again")
    generator.remember_latents(x, ws)


def annotate_folder(out_dir: str | Path, k: int, *, model: str | None = "embedded", seed: int = 0,
                    sampler: str = "ddim", sampling_steps: int = 50, batch_size: int = 50, oracle_annotate: bool = False,
                    device: str = "cpu", k_option: str = "--k", ensemble: str | Path | None = None) -> list[Path]:
    """`datasetddpm annotate`: K samples for annotators, every input checked before anything is written.
    With `ensemble` and no `model`, the samples come from the model the ensemble was trained on."""
    from ..errors import OptionError
    from ..generators.loading import load_generator
    from ..io import check_output_dir
    if k < 1:
        raise OptionError(k_option, f"must be >= 1 samples, got {k}")
    if batch_size < 1:
        raise OptionError("--batch-size", f"must be >= 1, got {batch_size}")
    if model is None:
        from ..ensemble.model import load_ensemble
        model = (load_ensemble(ensemble).cfg.model if ensemble is not None else "") or "embedded"
    generator = load_generator(model, device)
    generator.make_sampler(sampler, sampling_steps)
    oracle = None
    if oracle_annotate:
        from ..paths import EMBEDDED_ORACLE_DIR
        from ..segmenters.model import load_segmenter
        oracle = load_segmenter(EMBEDDED_ORACLE_DIR).to(device)
        reason = oracle.check_size(generator.resolution, generator.resolution)
        if reason:
            raise OptionError("--oracle-annotate", f"the embedded oracle cannot annotate this model's images: {reason}")
    labeller = None
    if ensemble is not None:  # pre-annotations: the ensemble labels the samples on this generator's features
        from .generate import Labeller, check_labeller
        check_labeller(ensemble, generator)  # same model, size and feature dimension: one line otherwise
        labeller = Labeller(ensemble, generator, device)
    check_output_dir(out_dir, 2 * k * 3 * generator.resolution ** 2, what="the samples")
    return export_for_annotation(generator, k, out_dir, seed=seed, sampler=sampler, num_steps=sampling_steps,
                                 batch_size=batch_size, oracle=oracle, labeller=labeller)
