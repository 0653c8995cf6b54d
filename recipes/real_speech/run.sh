#!/usr/bin/env bash
# The numbers of docs/real_speech.md: Whisper tiny.en against its random-init twin (and the demo's toy MR-HuBERT
# against its twin) on real speech, and IC/KS on synthetic corpora. Run from the repository root after `make models`:
#   bash recipes/real_speech/run.sh runs/real_speech
# Single-threaded (the machine it was measured on is shared); about 30 CPU-minutes.
set -euo pipefail
OUT=${1:-runs/real_speech}
mkdir -p "$OUT/analysis" "$OUT/train"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
[ -f "$OUT/corpus/manifest.json" ] || mrsuperb corpus real --out "$OUT/corpus"
analyze() {  # NAME SEED [extra options]: phone CCA and MI on the real corpus's dev-clean (MI k-means on train-clean-100)
  local name=$1 seed=$2; shift 2
  [ -f "$OUT/analysis/$name-s$seed/mi_phone.json" ] || mrsuperb analyze "$@" --corpus "$OUT/corpus" \
    --properties phone,mi_phone --mi-clusters phone=50 --seed "$seed" --threads 1 -q --out "$OUT/analysis/$name-s$seed"
}
for seed in 0 1 2; do
  analyze whisper_tiny_en "$seed" -u whisper_tiny_en
  analyze whisper_tiny_en_random "$seed" -u whisper_tiny_en_random
done
# Whisper base (make models fetches tiny.en only): one seed
python -m whisper_upstream.models base
analyze whisper_base 0 -u whisper_base
analyze whisper_base_random 0 -u whisper_base_random
# The toy MR-HuBERT of the demo: pre-trained briefly on synthetic speech (recipes/pretrain/demo_tiny.yaml)
[ -f "$OUT/synth/asr/manifest.json" ] || mrsuperb corpus asr --out "$OUT/synth/asr" --utterances 320 --quiet
[ -f "$OUT/pretrain/results.json" ] || mrsuperb pretrain --config recipes/pretrain/demo_tiny.yaml \
  --corpus "$OUT/synth/asr" --out "$OUT/pretrain" -a --quiet
for seed in 0 1 2; do
  analyze toy_pretrained "$seed" -u mrhubert_local -k "$OUT/pretrain/checkpoints/checkpoint_best.pt"
  analyze toy_random-init "$seed" -u mrhubert_local -k "$OUT/pretrain/checkpoints/checkpoint_init.pt"
done
# IC and KS: synthetic corpora of 400 utterances, the quick configs, KS 300 steps, IC 1000 (300 learn no IC);
# Whisper with pad_to_30s: false
printf 'pad_to_30s: false\n' > "$OUT/whisper_options.yaml"
for task in ic ks; do
  [ -f "$OUT/synth/$task/manifest.json" ] || mrsuperb corpus $task --out "$OUT/synth/$task" --utterances 400 --quiet
done
IC="config.downstream_expert.datarc.file_path=$OUT/synth/ic/fluent_speech_commands_dataset"
KS="config.downstream_expert.datarc.speech_commands_root=$OUT/synth/ks/speech_commands_v0.01,,config.downstream_expert.datarc.speech_commands_test_root=$OUT/synth/ks/speech_commands_test_set_v0.01"
EVAL=",,config.runner.eval_dataloaders=['dev', 'test']"
KS_STEPS="$EVAL,,config.runner.total_steps=300,,config.runner.eval_step=100,,config.runner.save_step=100,,config.runner.log_step=50"
IC_STEPS="$EVAL,,config.runner.total_steps=1000,,config.runner.eval_step=250,,config.runner.save_step=250,,config.runner.log_step=100"
for task in ks ic; do
  for u in whisper_tiny_en whisper_tiny_en_random; do
    data=$KS$KS_STEPS; [ "$task" = ic ] && data=$IC$IC_STEPS
    [ -f "$OUT/train/$u/$task/results.json" ] || run_downstream.py -m train -u "$u" -g "$OUT/whisper_options.yaml" \
      -d "$task" -c recipes/quick/$task/config.yaml -p "$OUT/train/$u/$task" -o "$data" --seed 0 --device cpu
  done
done
python recipes/real_speech/summarize.py "$OUT"
