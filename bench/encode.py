"""simkit Encoder vs sentence-transformers: throughput and agreement on the same model.

One random-weight BERT (all-MiniLM-L6 shape by default: 6 layers, hidden 384; ``--size base``
for 12 x 768) with a character vocabulary, saved as a Hugging Face directory; both libraries
load that directory with mean pooling and encode the same sentences in batches of 32. The
runs alternate (simkit, peer, simkit, ...) so that load from other processes hits both alike;
the table shows medians. Agreement is the minimum cosine to a direct ``transformers``
computation (padding-masked mean of ``BertModel`` outputs).

    pip install -c bench/constraints.txt 'sentence-transformers>=3'   # or: make bench-deps
    python bench/encode.py --data-dir ../shared/data/chinese-sts --n 10000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def sentences(data_dir: Path | None, n: int, seed: int) -> list[str]:
    """Unique sentences of the STS files if given, else synthetic ones from the demo corpus."""
    out: dict[str, None] = {}
    if data_dir is not None:
        for f in sorted(data_dir.glob("*/*.data")):
            for line in f.read_text(encoding="utf-8").splitlines():
                for s in line.split("\t")[:2]:
                    out.setdefault(s.strip(), None)
    texts = [t for t in out if t]
    if len(texts) < n:
        from simkit import assets

        chars = list("".join(assets.demo_corpus().read_text(encoding="utf-8").split()))
        rng = np.random.default_rng(seed)
        texts += ["".join(rng.choice(chars, size=int(rng.integers(6, 40)))) for _ in range(n - len(texts))]
    rng = np.random.default_rng(seed)
    return [texts[i] for i in rng.permutation(len(texts))[:n]]


def build_model(texts: list[str], size: str, path: Path) -> None:
    from transformers import BertConfig, BertModel

    from simkit.models.factory import build_vocab
    from simkit.tokenization import Tokenizer

    layers, hidden = (6, 384) if size == "small" else (12, 768)
    vocab = build_vocab(texts)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=hidden // 64, intermediate_size=4 * hidden)
    torch.manual_seed(0)
    BertModel(cfg).eval().save_pretrained(path)
    Tokenizer.from_vocab(vocab).save(path)


def direct(path: Path, texts: list[str], max_len: int) -> np.ndarray:
    from transformers import BertModel, BertTokenizerFast

    tok, model = BertTokenizerFast.from_pretrained(path), BertModel.from_pretrained(path).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), 64):
            b = tok(texts[i : i + 64], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            h = model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            out.append(((h * m).sum(1) / m.sum(1)).numpy())
    return np.concatenate(out)


def min_cos(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--size", choices=["small", "base"], default="small")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        sys.exit("the peer is missing: pip install -c bench/constraints.txt 'sentence-transformers>=3'")
    from simkit.encoder import Encoder

    texts = sentences(args.data_dir, args.n, args.seed)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model"
        build_model(texts, args.size, path)
        ref = direct(path, texts, args.max_seq_length)
        runners = {
            "simkit fp32": Encoder(path, pooling="mean", max_seq_length=args.max_seq_length),
            "simkit bf16": Encoder(path, pooling="mean", max_seq_length=args.max_seq_length, dtype="bf16"),
            "sentence-transformers fp32": SentenceTransformer(str(path), device="cpu"),
        }
        runners["sentence-transformers fp32"].max_seq_length = args.max_seq_length
        times: dict[str, list[float]] = {k: [] for k in runners}
        vecs: dict[str, np.ndarray] = {}
        for _ in range(args.repeats):
            for name, enc in runners.items():
                t0 = time.perf_counter()
                vecs[name] = enc.encode(texts, batch_size=32, show_progress_bar=False)
                times[name].append(time.perf_counter() - t0)
    peer = statistics.median(times["sentence-transformers fp32"])
    print(f"\n{args.n} sentences, BERT {args.size} (random weights), batch 32, max_seq_length "
          f"{args.max_seq_length}, {args.threads} threads, median of {args.repeats} alternating runs\n")
    print(f"| {'encoder':<28} | {'sent/s':>8} | {'vs ST fp32':>10} | {'min cos to transformers':>23} |")
    print(f"|{'-' * 30}|{'-' * 10}|{'-' * 12}|{'-' * 25}|")
    for name in runners:
        med = statistics.median(times[name])
        print(f"| {name:<28} | {args.n / med:8.1f} | {peer / med:9.2f}x | {min_cos(vecs[name], ref):23.6f} |")


if __name__ == "__main__":
    main()
