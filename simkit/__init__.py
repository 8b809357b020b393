"""simkit: Chinese sentence embeddings and semantic search."""

__version__ = "0.1.0"
