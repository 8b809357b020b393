#!/usr/bin/env bash
# Default model v3: pre-training and tuning from scratch, sized in seconds for one lent GPU.
#
#   carve     select / report parts of the valid splits, by sentence (the model card's command,
#             so that scores compare with the card's)
#   pretrain  masked-LM pre-training of a new RoFormer on every training sentence
#   tune      SimBERT (seq2seq + in-batch) + CoSENT within each file + supervised SimCSE on NLI,
#             the best select average kept
#   score     select and report Spearman beside the bundled model and TF-IDF, report retrieval,
#             the 20 paraphrases, and the fp16 size
#
# Each training step runs on a time schedule (--lr-schedule time): the rate reaches zero as its
# budget runs out, however fast the machine. On a 2-core CPU the same commands run, far longer
# (raise the budgets).
#
# usage: recipes/v3.sh DATA RUNS STEP [SCALE]
#   DATA   the shared data folder (chinese-sts/ and chinese-pairs/)
#   RUNS   where the carve, the runs and the scores go
#   STEP   carve | pretrain | tune | score | all
#   SCALE  gpu (default) | cpu (the same model and pre-training, hours on two cores: six for
#          pretrain, one and a half for tune) | smoke (a tiny model for seconds: the plumbing)
# env: SIMKIT (the command; default: simkit), PY (the Python of the fp16 copies; default: python3),
#      PRETRAIN_SECONDS, TUNE_SECONDS (the budgets; defaults by SCALE), TUNE_SEED (default 21),
#      INIT (the model tune starts from; default RUNS/mlm/model, e.g. simkit/data/default-model
#      to tune the shipped model further), STSB_REPEATS (times STS-B's graded train lines are
#      given to tune; default 1), TUNE_LR (tune's peak learning rate; default 2e-4),
#      CHECKPOINT_EVERY (steps, for long runs), RESUME=1 (pretrain / tune go on from their
#      last checkpoint if there is one: the time schedule counts the seconds already trained,
#      so a long CPU run can span several sittings), FRESH=1 (replace such a run)
set -euo pipefail

if [ $# -lt 3 ]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
  exit 2
fi
D=$1 R=$2 STEP=$3 SCALE=${4:-gpu}
HERE=$(cd "$(dirname "$0")" && pwd)
read -r -a SK <<<"${SIMKIT:-simkit}"
PY=${PY:-python3}
export HF_HUB_OFFLINE=1
P=$D/chinese-pairs/pairs N=$D/chinese-pairs/nli S=$D/chinese-pairs/sentences C=$R/carve

# gpu and cpu train the same model with the same masked-LM batches (a run can move between
# them with RESUME=1); cpu tunes with the small batches, cut by length, that suit two cores.
SHAPE=(--hidden-size 384 --num-layers 6 --num-heads 6 --vocab-min-freq 3)
MLM=(--mlm-batch-size 512 --lr 6e-4 --bf16)
EVAL=(--bootstrap 1000)
case $SCALE in
  gpu)   PRE=${PRETRAIN_SECONDS:-180} TUNE_S=${TUNE_SECONDS:-300}
         TUNE=(--batch-size 128 --cosent-batch-size 256 --simcse-batch-size 128 --lr "${TUNE_LR:-2e-4}" --bf16) ;;
  cpu)   PRE=${PRETRAIN_SECONDS:-21600} TUNE_S=${TUNE_SECONDS:-5400} CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-100}
         TUNE=(--batch-size 32 --cosent-batch-size 96 --simcse-batch-size 48 --micro-batches 3 --lr "${TUNE_LR:-2e-4}" --bf16) ;;
  smoke) SHAPE=(--hidden-size 32 --num-layers 2 --num-heads 2 --vocab-min-freq 1)
         MLM=(--mlm-batch-size 8 --lr 1e-3); PRE=${PRETRAIN_SECONDS:-3}
         TUNE=(--batch-size 4 --cosent-batch-size 8 --simcse-batch-size 4 --lr 1e-3)
         TUNE_S=${TUNE_SECONDS:-3}; EVAL=(--bootstrap 20) ;;
  *) echo "recipes/v3.sh: SCALE must be gpu, cpu or smoke, not '$SCALE'" >&2; exit 2 ;;
esac

for f in "$D/chinese-sts" "$P" "$N" "$S"; do
  [ -d "$f" ] || { echo "recipes/v3.sh: $f: no such folder; DATA must hold chinese-sts/ and chinese-pairs/" >&2; exit 1; }
done
CKPT=${CHECKPOINT_EVERY:-1000000}  # steps; the last step is always checkpointed
say() { echo "== $* ($(date -u +%H:%M:%S))" >&2; }
# AGAIN=(--resume DIR) with RESUME=1 when DIR has checkpoints; a run is never cleared unasked
# (FRESH=1 does it); a folder without checkpoints is cleared, so each run has one log
resume_or_clear() {
  AGAIN=()
  if [ -d "$1/checkpoints" ] && [ "${RESUME:-0}" = 1 ]; then AGAIN=(--resume "$1"); return; fi
  if [ -d "$1/checkpoints" ] && [ "${FRESH:-0}" != 1 ]; then
    echo "recipes/v3.sh: $1 holds a run; RESUME=1 goes on from it, FRESH=1 starts afresh" >&2
    exit 1
  fi
  rm -rf "$1"
}

carve() {
  say carve
  mkdir -p "$C"
  for t in ATEC BQ LCQMC PAWSX STS-B; do
    awk 'NR%4!=0' "$D/chinese-sts/$t/$t.valid.data" > "$C/bundled-$t.data"
  done
  "${SK[@]}" -q eval carve --overwrite -d "$D/chinese-sts" -o "$C/bund" "$P"/*.tsv "$N"/*.tsv "$S"/*.txt \
    "$D/chinese-sts/STS-B/STS-B.train.data" "$C"/bundled-*.data
}

# a model stored in fp16 (half the bytes: what a lent machine sends back)
fp16() {
  PYTHONPATH="$HERE/.." "$PY" - "$1" "$2" <<'PYEOF'
import sys
from simkit.models.checkpoint import load_model, save_model
model, tok, info = load_model(sys.argv[1])
save_model(model, tok, info, sys.argv[2], dtype="fp16", overwrite=True)
PYEOF
}

pretrain() {
  say "pretrain ($PRE s)"
  resume_or_clear "$R/mlm"
  "${SK[@]}" -q train mlm "$S"/*.txt "$P"/*.tsv "$N"/*.tsv "$D/chinese-sts/STS-B/STS-B.train.data" \
    "$C"/bundled-*.data -o "$R/mlm" --backbone roformer "${SHAPE[@]}" --max-seq-length 64 \
    "${MLM[@]}" --warmup-ratio 0.06 --epochs 1000 --time-budget "$PRE" --lr-schedule time \
    --group-by-length --checkpoint-every "$CKPT" --seed 0 "${AGAIN[@]}"
  fp16 "$R/mlm/model" "$R/mlm-fp16"  # to tune again elsewhere, as RUNS/mlm/model
}

tune() {
  say "tune ($TUNE_S s)"
  local valid=() lp=() nli=() stsb=()
  resume_or_clear "$R/tune"
  for t in ATEC BQ LCQMC PAWSX STS-B; do valid+=(--valid "$C/bund/$t/$t.select.data"); done
  for f in "$N"/*.tsv; do nli+=(--nli "$f"); done
  # LCQMC and PAWSX have no train split here: their few lines are given five times, so that
  # the large banking files do not crowd them out
  for _ in 1 2 3 4 5; do lp+=("$C/bundled-LCQMC.data" "$C/bundled-PAWSX.data"); done
  for _ in $(seq "${STSB_REPEATS:-1}"); do stsb+=("$D/chinese-sts/STS-B/STS-B.train.data"); done
  "${SK[@]}" -q train simbert "$P"/*.tsv "${stsb[@]}" "$C/bundled-ATEC.data" \
    "$C/bundled-BQ.data" "$C/bundled-STS-B.data" "${lp[@]}" "${valid[@]}" --init "${INIT:-$R/mlm/model}" \
    -o "$R/tune" --max-seq-length 64 "${TUNE[@]}" --cosent-weight 1 --cosent-scope file \
    "${nli[@]}" --simcse-weight 1 --warmup-ratio 0.05 \
    --epochs 1000 --time-budget "$TUNE_S" --lr-schedule time --checkpoint-every "$CKPT" --seed "${TUNE_SEED:-21}" "${AGAIN[@]}"
  fp16 "$R/tune/model" "$R/v3-fp16"
}

score() {
  say score
  local out=$R/scores bundled=$HERE/../simkit/data/default-model
  mkdir -p "$out"
  "${SK[@]}" -q eval sts -m "$R/v3-fp16" -m "$bundled" -d "$C/bund" --split select,report -p pooler \
    -w 0,full --baseline tfidf "${EVAL[@]}" --no-cache --no-plot -o "$out/sts" --overwrite > "$out/sts.md"
  "${SK[@]}" -q eval retrieval -m "$R/v3-fp16" -m "$bundled" -d "$C/bund" --split report \
    --baseline tfidf "${EVAL[@]}" > "$out/retrieval.json"
  "${SK[@]}" -q paraphrase -m "$R/v3-fp16" --input "$HERE/questions20.txt" -n 100 -k 1 --temperature 0.8 \
    --top-p 0.95 --no-repeat-ngram-size 2 --rerank likelihood --seed 0 > "$out/paraphrases.jsonl"
  du -b "$R/v3-fp16/model.safetensors" | cut -f1 > "$out/fp16-bytes.txt"
  cat "$out/sts.md"
}

case $STEP in
  carve|pretrain|tune|score) "$STEP" ;;
  all) carve; pretrain; tune; score ;;
  *) echo "recipes/v3.sh: STEP must be carve, pretrain, tune, score or all, not '$STEP'" >&2; exit 2 ;;
esac
say done
