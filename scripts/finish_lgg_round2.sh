#!/usr/bin/env bash
# After a run of scripts/train_lgg_round2.sh has stopped: the steps that turn it into a shipped model,
# as they were run for the round-2 U-Nets (reports/models-round2.md, sessions 10 and 13).
#
#   scripts/finish_lgg_round2.sh compare RUN NAME [RUNS_DIR]   # validation only: decide
#   scripts/finish_lgg_round2.sh install RUN NAME [RUNS_DIR]   # then, if the run is better: install, measure
#
# compare: `aimc postprocess` chooses the run's reading (windows, mirror, components) on the validation
#   patients with the current code, then both the run and the shipped NAME are scored per validation
#   patient, side by side. Nothing is installed; the decision is the reader's, on these numbers.
#   It reads digitally: an HWA run is decided on chips instead (aimc evaluate --split val --mode analog).
# install: installs the run as NAME (scripts/install_model.py drops what was measured on the old
#   weights), writes its card, refits its trust calibrations on validation (both modes for an HWA
#   model), measures the test split once (digitally; an HWA model also on chips: noise 1, 1 day, MC 4,
#   2 programmings, the targets' setting) and its trust layer on test, and redraws the learning curves.
# Logs go to RUNS_DIR/RUN/finish-*.log (outside git). Each step is long (minutes to an hour on 2 cores).
# A stopped install can be rerun: the weights already installed are not reinstalled, and the trust
# calibrations resume after the last case they measured.
set -euo pipefail
step=${1:?"usage: $0 compare|install RUN NAME [RUNS_DIR]"}
case $step in compare|install) ;; *) echo "unknown step $step (compare or install)" >&2; exit 2 ;; esac
run=${2:?"usage: $0 compare|install RUN NAME [RUNS_DIR]"}
name=${3:?"usage: $0 compare|install RUN NAME [RUNS_DIR]"}
runs=$(realpath -m "${4:-../runs}")
repo=$(cd "$(dirname "$0")/.." && pwd)
data=$(realpath -m "${AIMC_DATA:-$repo/../shared/data}")
model=$runs/models/$run
cd "$repo"
export PYTHONPATH=$repo
py=.venv/bin/python
[ -f "$model/model.json" ] || { echo "no finished model at $model (has the run stopped?)" >&2; exit 2; }
log() { tee -a "$runs/$run/finish-$step.log"; }
case $step in
  compare)
    .venv/bin/aimc postprocess --model "$model" --data "$data/lgg" | log
    $py -m training.failure_analysis --model "$model" --data "$data/lgg" --json "$runs/$run/val-run.json" | log
    $py -m training.failure_analysis --model "$name" --data "$data/lgg" --json "$runs/$run/val-shipped.json" | log ;;
  install)
    $py scripts/install_model.py "$model" "$name" | log
    $py -m training.model_cards --data "$data" --model "$name" | log
    kind=$($py -c "import sys; from engine.model_store import find_model; print(find_model(sys.argv[1]).kind)" "$name")
    modes=(digital); [ "$kind" = hwa ] && modes=(analog digital)
    $py -m training.trust_calibration --data "$data" --model "$name" --mode "${modes[@]}" | log
    .venv/bin/aimc evaluate --model "$name" --data "$data/lgg" --split test --mode digital --record --workers 1 | log
    if [ "$kind" = hwa ]; then
      .venv/bin/aimc evaluate --model "$name" --data "$data/lgg" --split test --mode analog --mc 4 --noise 1 \
        --drift 86400 --programmings 2 --record --workers 1 | log
    fi
    $py -m training.report.trust --data "$data" --out "$runs/$run/trust" \
      --model "${modes[@]/#/$name:}" | log
    $py -m training.report.learning_curves | log ;;
esac
