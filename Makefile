# mmie: `make demo` and `make test` do all the set-up on a fresh machine (creating .venv on first use).
SHELL := /bin/bash
PYTHON_BIN ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmie-installed
# Run inside a loopback-only network namespace: no traffic leaves the machine.
LOOPBACK := .ci/loopback
DEMO ?= runs/demo
MLRUNS ?= mlruns
# Each demo step's wall time and exit status (common/steps.py); the summary prints them.
STEPS := $(DEMO)/steps.jsonl
STEP = $(PY) -m common.steps --log $(STEPS) --step
NEWS := $(DEMO)/data/newsclippings
# Ray's dashboard probes cloud metadata unless HOME holds an empty ray_bootstrap_config.yaml (see README).
RAY_HOME := $(abspath runs/.ray-home)
export MMIE_CACHE ?= $(HOME)/.cache/mmie

# Keep every library off the network (common/offline.py sets the same defaults in-process).
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export HF_HUB_DISABLE_TELEMETRY=1
export YOLO_OFFLINE=1
export YOLO_AUTOINSTALL=False
export MLFLOW_DISABLE_TELEMETRY=true
export DO_NOT_TRACK=true
export RAY_USAGE_STATS_ENABLED=0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_AUTH_MODE=disabled
export TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1

.PHONY: install demo test sweep-demo mlflow-ui bench clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	@echo "installing mmie and its pinned dependencies into $(VENV) (first time: a few minutes, ~7.5 GB)"
	set -o pipefail; $(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 \
	  | { grep -v "is ignored: it is neither" || true; }
	$(PY) -m pip check
	@echo "building DeepSpeed's shared-memory comm op once (~35 s of g++), so pretraining does not on first use"
	$(PY) -m pretrain.engine --build-ops
	@touch $(STAMP)

# The whole chain on synthetic data: data -> zoo check -> shards -> pretraining (2 DeepSpeed ranks) ->
# fine-tuning with and without the pretrained init -> a small sweep -> a summary. About 10 minutes on 2 cores.
demo: $(STAMP)
	@mkdir -p $(DEMO) && rm -f $(STEPS)
	$(STEP) data -- $(LOOPBACK) $(PY) -m common.synthetic --out $(DEMO)/data --seed 0 --news 1000
	$(STEP) zoo -- $(LOOPBACK) $(PY) -m common.zoo --report $(DEMO)/zoo.json
	$(STEP) shards-train -- $(LOOPBACK) $(PY) -m pretrain.prepare --annotations $(NEWS)/annotations/train.json \
	  --data-json $(NEWS)/data.json --images $(NEWS) --out $(DEMO)/shards/train --max-boxes 4 --teacher-size 96 \
	  --shard-size 200 --threads 2
	$(STEP) shards-val -- $(LOOPBACK) $(PY) -m pretrain.prepare --annotations $(NEWS)/annotations/val.json \
	  --data-json $(NEWS)/data.json --images $(NEWS) --out $(DEMO)/shards/val \
	  --vocab $(DEMO)/shards/train/vocab.json --max-boxes 4 --teacher-size 96 --shard-size 200 --threads 2
	rm -rf $(DEMO)/pretrain
	$(STEP) pretrain -- $(LOOPBACK) $(VENV)/bin/deepspeed --num_gpus 2 --master_addr 127.0.0.1 pretrain/run.py \
	  --config pretrain/configs/tiny.yaml --run-dir $(DEMO)/pretrain --tracking-uri $(MLRUNS) \
	  data.train=$(DEMO)/shards/train data.val=$(DEMO)/shards/val train.steps=30 train.eval_every=15 \
	  train.ckpt_every=15
	@echo "fine-tuning with the pretrained init and with the zoo weights side by side, one core each (~3.5 min);" \
	  "follow them with: tail -f $(DEMO)/finetune/*.log"
	$(MAKE) --no-print-directory -j2 demo-finetune-pretrained demo-finetune-zoo
	$(STEP) viewer -- $(LOOPBACK) $(PY) -m finetune.view --run $(DEMO)/finetune/mner-pretrained \
	  --tracking-uri $(MLRUNS)
	$(STEP) sweep -- $(MAKE) --no-print-directory sweep-demo
	$(PY) -m common.summary $(DEMO)

# The demo's two fine-tuning runs (make demo runs them side by side: two one-thread runs on two cores get ~1.3x the
# work done of one two-thread run after the other). Each logs to its own file; its last line, or its error, is shown.
FINETUNE_DEMO = $(LOOPBACK) $(PY) finetune/run.py --task mner --data $(DEMO)/data/twitter --tracking-uri $(MLRUNS) \
  --threads 1 train.epochs=3 data.max_train=600
demo-finetune-%: $(STAMP)
	@mkdir -p $(DEMO)/finetune
	@$(STEP) finetune-$* -- $(FINETUNE_DEMO) --init $(if $(filter pretrained,$*),$(DEMO)/pretrain/export,none) \
	  --run-dir $(DEMO)/finetune/mner-$* > $(DEMO)/finetune/mner-$*.log 2>&1; \
	  rc=$$?; tail -n $$([ $$rc = 0 ] && echo 1 || echo 30) $(DEMO)/finetune/mner-$*.log; exit $$rc

# A small Ray Tune sweep over alpha, beta, K on the demo's synthetic tweets, its trials trained like the demo's
# fine-tuning runs (600 tweets, up to 3 epochs, the pretrained init). The pretrained-init run is the trial at the
# config's own alpha, beta, K (--reuse: checked to be trained as the trials are, and not trained again); two more
# are drawn and train side by side, one core each; ASHA may stop the weaker after its first epoch.
sweep-demo: $(STAMP)
	@mkdir -p $(RAY_HOME) && echo '{}' > $(RAY_HOME)/ray_bootstrap_config.yaml
	HOME=$(RAY_HOME) $(LOOPBACK) $(PY) sweeps/tune.py --task mner --data $(DEMO)/data/twitter \
	  --init $(DEMO)/pretrain/export --reuse $(DEMO)/finetune/mner-pretrained --samples 2 --epochs 3 --num-cpus 2 \
	  --cpus-per-trial 1 --storage $(DEMO)/sweeps --tracking-uri $(MLRUNS) --name demo-sweep data.max_train=600

# MLflow's UI over the local store, on loopback: open http://127.0.0.1:5000
mlflow-ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(abspath $(MLRUNS))/mlflow.db --host 127.0.0.1 --port 5000

test: $(STAMP)
	$(LOOPBACK) $(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	for b in bench/*.py; do $(LOOPBACK) $(PY) $$b | tail -n 3; done

clean-demo:
	rm -rf $(DEMO)
