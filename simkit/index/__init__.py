"""Vector indexes: FAISS (VectorIndex) and sign-random-projection LSH (LSHIndex)."""
