"""One checkpoint tester for every format the toolkit writes (diffusers' ModelTesterMixin habit): a
round trip gives the same outputs, and each way a checkpoint breaks is one line naming the file."""

import json
import shutil

import numpy as np
import pytest
import torch

from datasetddpm.errors import DatasetDDPMError


class CheckpointTester:
    """Subclasses say how to build a tiny model, save it, load it and run it."""

    meta_file = "config.json"
    weights_file = "model.safetensors"

    def build(self):
        raise NotImplementedError

    def save(self, model, directory):
        raise NotImplementedError

    def load(self, directory):
        raise NotImplementedError

    def output(self, model) -> torch.Tensor:
        raise NotImplementedError

    def test_round_trip_gives_the_same_outputs(self, tmp_path):
        model = self.build()
        self.save(model, tmp_path / "ckpt")
        assert torch.equal(self.output(self.load(tmp_path / "ckpt")), self.output(model))

    def test_saving_twice_gives_the_same_bytes(self, tmp_path):
        model = self.build()
        self.save(model, tmp_path / "a")
        self.save(model, tmp_path / "b")
        for name in (self.meta_file, self.weights_file):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()

    @pytest.mark.parametrize("damage,needle", [
        ("missing weights", "file not found"),
        ("truncated weights", "not a readable safetensors file"),
        ("missing meta", "file not found"),
        ("foreign format", "not a DatasetDDPM"),
        ("meta not JSON", "not valid JSON"),
        ("a tensor of the wrong shape", "shape"),
    ])
    def test_a_damaged_checkpoint_is_one_error_naming_its_file(self, tmp_path, damage, needle):
        self.save(self.build(), tmp_path / "good")
        bad = tmp_path / "bad"
        shutil.copytree(tmp_path / "good", bad)
        weights, meta = bad / self.weights_file, bad / self.meta_file
        if damage == "missing weights":
            weights.unlink()
        elif damage == "truncated weights":
            weights.write_bytes(weights.read_bytes()[:200])
        elif damage == "missing meta":
            meta.unlink()
        elif damage == "foreign format":
            meta.write_text(json.dumps({**json.loads(meta.read_text()), "format": "something-else"}))
        elif damage == "meta not JSON":
            meta.write_text("{")
        else:
            from safetensors.torch import load_file, save_file
            tensors = load_file(weights)
            name = max(tensors, key=lambda k: tensors[k].numel())
            tensors[name] = torch.zeros(tensors[name].numel() + 1)
            save_file(tensors, weights)
        with pytest.raises(DatasetDDPMError) as err:
            self.load(bad)
        message = str(err.value)
        assert "\n" not in message and str(bad) in message and needle in message, message


class TestDiffusionCheckpoint(CheckpointTester):
    def build(self):
        from conftest import tiny_unet
        return tiny_unet(seed=3)

    def save(self, model, directory):
        from conftest import SCHEDULER
        from datasetddpm.generators.diffusion import save_checkpoint
        save_checkpoint(directory, model, SCHEDULER)

    def load(self, directory):
        from datasetddpm.generators.loading import load_generator
        return load_generator(directory).unet

    def output(self, model):
        torch.manual_seed(0)
        with torch.no_grad():
            return model(torch.randn(2, 3, 32, 32), torch.tensor([10, 500])).sample


class TestEnsembleCheckpoint(CheckpointTester):
    meta_file, weights_file = "ensemble.json", "ensemble.safetensors"

    def build(self):
        from datasetddpm.ensemble.model import EnsembleConfig, PixelEnsemble
        cfg = EnsembleConfig(in_dim=24, num_classes=5, members=3, features={"blocks": [1], "steps": [50],
                                                                            "noise_seed": 0})
        return PixelEnsemble(cfg, seed=2).eval()

    def save(self, model, directory):
        from datasetddpm.ensemble.model import save_ensemble
        save_ensemble(directory, model)

    def load(self, directory):
        from datasetddpm.ensemble.model import load_ensemble
        return load_ensemble(directory)

    def output(self, model):
        x = torch.from_numpy(np.random.default_rng(0).standard_normal((64, 24)).astype(np.float32))
        with torch.no_grad():
            return model(x)


class TestSegmenterCheckpoint(CheckpointTester):
    def build(self):
        from datasetddpm.segmenters.model import SegmenterConfig, create_segmenter
        torch.manual_seed(1)
        return create_segmenter(SegmenterConfig(num_classes=4, arch="unet", encoder_depth=3,
                                                decoder_channels=(32, 16, 8))).eval()

    def save(self, model, directory):
        from datasetddpm.segmenters.model import save_segmenter
        save_segmenter(directory, model)

    def load(self, directory):
        from datasetddpm.segmenters.model import load_segmenter
        return load_segmenter(directory)

    def output(self, model):
        x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8))
        with torch.no_grad():
            return model(x)


class TestStyleGAN2Checkpoint(CheckpointTester):
    def build(self):
        from test_stylegan2 import tiny_net
        return tiny_net(seed=4)

    def save(self, model, directory):
        from datasetddpm.generators.stylegan2 import save_stylegan2
        save_stylegan2(directory, model)

    def load(self, directory):
        from datasetddpm.generators.stylegan2 import load_stylegan2
        return load_stylegan2(directory).net

    def output(self, model):
        from datasetddpm.generators.stylegan2 import StyleGAN2Generator
        return StyleGAN2Generator(model).sample([0, 1])
