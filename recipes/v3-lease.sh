#!/usr/bin/env bash
# recipes/v3.sh inside one lease of a GPU machine: train first, send the model back, then
# score with whatever time is left, so that a slow scoring step never costs the model.
#
# usage: recipes/v3-lease.sh DATA RUNS OUT [SCALE]
#   OUT    where the files to send back go (at most 8, 15 MiB each): log.txt, the tuned model
#          and both logs in parts (model.tar.part-aa, ...; cat them | tar -xf - -C RUNS), the
#          pre-trained model if this lease made one (mlm.tar.part-*: RUNS/mlm-fp16, which a
#          later lease can tune again as RUNS/mlm/model), and the scores
# env: LIMIT (seconds the whole command may take; default 580), SCORE_MIN (the least time
#      worth starting the score step with; default 60), STEPS (the training steps to run;
#      default "carve pretrain tune": "carve tune" tunes a model carried to RUNS/mlm/model),
#      and recipes/v3.sh's own variables
set -uo pipefail
if [ $# -lt 3 ]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
  exit 2
fi
D=$1 R=$2 OUT=$3 SCALE=${4:-gpu}
HERE=$(cd "$(dirname "$0")" && pwd)
LIMIT=${LIMIT:-580} SCORE_MIN=${SCORE_MIN:-60}
mkdir -p "$OUT"
LOG=$OUT/log.txt

steps=" ${STEPS:-carve pretrain tune} "
for step in $steps; do
  bash "$HERE/v3.sh" "$D" "$R" "$step" "$SCALE" 2>&1 | tee -a "$LOG" || exit 1
done
pack=()
for f in v3-fp16 mlm/log.jsonl tune/log.jsonl; do [ -e "$R/$f" ] && pack+=("$f"); done
[ "${#pack[@]}" -gt 0 ] && tar -C "$R" -cf - "${pack[@]}" | split -b 15m - "$OUT/model.tar.part-"
if [[ $steps == *" pretrain "* ]]; then
  tar -C "$R" -cf - mlm-fp16 | split -b 15m - "$OUT/mlm.tar.part-"
fi
[[ $steps == *" tune "* ]] || exit 0  # nothing to score
left=$((LIMIT - SECONDS - 10))
if [ "$left" -lt "$SCORE_MIN" ]; then
  echo "v3-lease: ${left} s left, not enough to score; score the model where it lands" | tee -a "$LOG"
  exit 0
fi
timeout "$left" bash "$HERE/v3.sh" "$D" "$R" score "$SCALE" 2>&1 | tee -a "$LOG"
rc=$?
for f in sts.md retrieval.json paraphrases.jsonl; do
  [ -f "$R/scores/$f" ] && cp "$R/scores/$f" "$OUT/"
done
echo "v3-lease: done in ${SECONDS} s (score rc $rc)" | tee -a "$LOG"
