"""`--format hub`: a folder ready for the Hugging Face Hub. The `hf` imagefolder (train/metadata.jsonl,
images, masks) plus README.md, a dataset card whose YAML front matter `datasets.load_dataset(DIR)`
reads (configs, task, licence, size) and whose text says how the pairs were made: generator, ensemble,
sampler, the uncertainty filter and the counts. `--push-to-hub REPO` uploads the folder afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..errors import DatasetDDPMError, OptionError
from .base import _write, class_names, export_hf

SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))


def size_category(n: int) -> str:
    return next((name for limit, name in SIZE_CATEGORIES if n < limit), "n>1M")


def generator_licence(model: str) -> str:
    """The generator's licence as its download record states it (`datasetddpm download` writes one beside
    the model folder), else where to find it."""
    folder = Path(model)
    for record in sorted(folder.parent.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("licence") and folder.name in (data.get("results") or []):
            return str(data["licence"])
    if str(model).startswith("embedded"):
        return "the toolkit's embedded model, trained on its own procedural images"
    return f"not recorded: the pairs inherit the licence of the generator {model} and of its training data"


def card_front_matter(card: dict) -> dict:
    kept = card["counts"]["kept"]
    return {"task_categories": ["image-segmentation"], "task_ids": ["semantic-segmentation"],
            "license": "other", "license_name": "inherited-from-the-generator",
            "tags": ["synthetic", "datasetddpm", "diffusion"], "size_categories": [size_category(kept)],
            "pretty_name": f"DatasetDDPM pairs from {Path(str(card['model'])).name}",
            "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "train/**"}]}]}


def card_text(card: dict) -> str:
    counts, names = card["counts"], class_names(card)
    classes = "\n".join(f"| {k} | {name} | {tuple(card['palette'][k])} |" for k, name in enumerate(names))
    return f"""
# Synthetic segmentation pairs (DatasetDDPM)

Images sampled from the diffusion model `{card['model']}` ({card['sampler']}, {card['sampling_steps']} steps,
seed {card['seed']}) and labelled by the pixel-classifier ensemble `{card['ensemble']}` on its features
(blocks {card['blocks']}, steps {card['steps']}), as in Baranchuk et al., ICLR 2022.

**Filter.** The {card['drop_fraction']:.0%} most uncertain pairs were dropped (at most {card['max_pairs']} kept):
{counts['generated']} generated, {counts['kept']} kept, {counts['dropped']} dropped. Each row's `uncertainty` is the
ensemble's score (the mean of the image's 10 % most uncertain pixels).

**Licence.** {generator_licence(str(card['model']))}.

**Columns.** `image`, `label` (the mask: pixel values are class ids; {card['ignore_label']} is ignored), `id`, `seed`,
`uncertainty`.

| id | class | colour |
|---:|---|---|
{classes}

Load it with `datasets.load_dataset("<this folder or repo>", split="train")`.
"""


def export_hub(pairs, dest) -> None:
    export_hf(pairs, dest)
    front = yaml.safe_dump(card_front_matter(pairs.card), sort_keys=False)
    _write(dest / "README.md", f"---\n{front}---\n{card_text(pairs.card)}".encode())


def check_repo(repo: str) -> None:
    owner, _, name = repo.partition("/")
    if not owner or not name or "/" in name:
        raise OptionError("--push-to-hub", f"expected a repository id OWNER/NAME, got {repo!r}")


def push_to_hub(folder: Path, repo: str) -> str:
    """Upload the folder as a dataset repository (created if missing); any failure is one line."""
    try:
        from huggingface_hub import HfApi
        api = HfApi()
        api.create_repo(repo, repo_type="dataset", exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(folder), repo_type="dataset")
    except Exception as e:  # offline, no token, no rights: the export stays; say why the upload failed
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DatasetDDPMError(f"--push-to-hub {repo}: the export is in {folder} but the upload failed "
                               f"({type(e).__name__}: {first})") from None
    return f"https://huggingface.co/datasets/{repo}"
