"""Paraphrase generation speed: simkit's batched + cached UniLM decoding vs a naive loop.

Same random-weight model, same prompt, same seed and sampling (top-p 0.95). The naive peer
is what SimBERT users run in a port without a cache: one sample at a time, the whole
``[CLS] src [SEP] out`` recomputed by the model's Hugging Face forward at every step
(``simkit.decoding.generate_uncached``). [SEP] is banned (bias -1e4) so every sample is
exactly --length tokens in both runs. transformers' ``generate`` is not compared: it decodes
causal LMs (BertLMHeadModel with is_decoder=True masks the source causally too) and has no
UniLM prefix-bidirectional mask, so it would run a different model.

    python bench/generate.py --naive-samples 2     # BERT-base shape 12 x 768: ~2-3 min on 2 idle cores
    python bench/generate.py --layers 6 --hidden 384 --repeats 3   # smaller, ~30 s
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from simkit.decoding import generate_uncached
from simkit.generate import Paraphraser
from simkit.models.checkpoint import ModelInfo
from simkit.models.factory import build_vocab, new_model
from simkit.sampling import SamplingConfig

PROMPT = "花呗的还款日是每个月几号，可以提前还清吗"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=21128, help="vocabulary size (LM head cost)")
    ap.add_argument("-n", type=int, default=32, help="samples")
    ap.add_argument("--length", type=int, default=32, help="generated tokens per sample")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--naive-repeats", type=int, default=1)
    ap.add_argument("--naive-samples", type=int, default=None,
                    help="samples timed in the naive loop (default n); every sample costs the "
                         "same there, so tokens/s is measured on fewer to keep the run short")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    vocab = build_vocab([PROMPT, "今天天气不错我们去公园散步吧明天会下雨吗"])
    vocab += [f"[unused{i}]" for i in range(a.vocab - len(vocab))]
    model, tok = new_model("bert", vocab, seed=a.seed, hidden_size=a.hidden, num_layers=a.layers,
                           max_position=512)
    with torch.no_grad():
        model.lm_head.bias[tok.sep_token_id] = -1e4  # fixed-length samples in both runs
    para = Paraphraser.from_model(model, tok, ModelInfo("bert", max_seq_length=64))
    cfg = SamplingConfig(top_p=0.95)
    tokens = a.n * a.length
    naive_n = a.naive_samples or a.n

    def cached() -> float:
        t0 = time.perf_counter()
        out = para.generate_ids([PROMPT], n=a.n, top_p=0.95, max_new_tokens=a.length, seed=a.seed)
        dt = time.perf_counter() - t0
        assert all(len(s) == a.length for s in out[0])
        return dt

    def naive() -> float:
        src = tok.encode_batch([PROMPT], 64)[0][0]
        g = torch.Generator().manual_seed(a.seed)
        t0 = time.perf_counter()
        for _ in range(naive_n):
            s = generate_uncached(model, tok, src, a.length, cfg, g)
            assert len(s) == a.length
        return time.perf_counter() - t0

    cached()  # warm-up (allocator, first-call overheads)
    t_cached = statistics.median(cached() for _ in range(a.repeats))
    t_naive = statistics.median(naive() for _ in range(a.naive_repeats))
    naive_tps, cached_tps = naive_n * a.length / t_naive, tokens / t_cached
    print(f"model: BERT {a.layers} layers x {a.hidden}, vocab {a.vocab}, random weights; "
          f"prompt {len(tok.tokenize_ids([PROMPT])[0])} tokens; n={a.n} samples x {a.length} tokens; "
          f"top-p 0.95; {a.threads} threads; medians of {a.repeats} (cached) / {a.naive_repeats} "
          f"(naive, {naive_n} of the {a.n} samples timed) runs")
    print(f"{'method':<42}{'seconds':>10}{'tokens/s':>12}{'ratio':>8}")
    print(f"{'simkit batched + KV cache':<42}{t_cached:>10.2f}{cached_tps:>12.1f}"
          f"{cached_tps / naive_tps:>8.1f}x")
    print(f"{'naive per-sample loop, full recompute':<42}{t_naive:>10.2f}{naive_tps:>12.1f}{1:>8.1f}x")
    print("transformers generate: not applicable (causal-LM decoding only, no UniLM mask)")


if __name__ == "__main__":
    main()
