"""simkit evaluation harness (import name: simkit_eval).

The five Chinese STS tasks (ATEC, BQ, LCQMC, PAWSX, STS-B) scored the way BERT-whitening and
the RoFormer-Sim articles did. One concern per module:

* :mod:`.data`: senteval_cn files, TSV pairs, C-MTEB copies -> :class:`~.data.PairDataset`
* :mod:`.scoring`: Spearman (main score, == scipy) / Pearson of cosine vs labels, averages
* :mod:`.cache`: embeddings keyed by (model, max_len, pooling, text hash); one pass per grid
* :mod:`.baseline`: character TF-IDF, the weight-free reference row
* :mod:`.grid`: models × pooling × transform (none, whitening[-k], jl-k) -> cells
* :mod:`.report`: MTEB-style JSON per task, run manifest, markdown table, PNG plot

The core library (``simkit``) never imports this package.
"""
