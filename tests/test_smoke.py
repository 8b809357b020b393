import numpy as np

from simkit.encoder import Encoder


def test_encode_shapes(tiny_model_dir, texts):
    enc = Encoder(tiny_model_dir)
    assert enc.encode(texts[0]).shape == (32,)
    out = enc.encode(texts)
    assert out.shape == (len(texts), 32) and out.dtype == np.float32
