import numpy as np

from simkit.encoder import Encoder


def test_encode_shapes(tiny_model_dir, texts):
    enc = Encoder(tiny_model_dir)
    assert enc.encode(texts[0]).shape == (32,)
    out = enc.encode(texts)
    assert out.shape == (len(texts), 32) and out.dtype == np.float32


def test_parameter_error_survives_pickling():
    # Ray and multiprocessing send exceptions between processes by pickling them.
    import pickle

    from simkit.errors import InputError, ParameterError

    e = pickle.loads(pickle.dumps(ParameterError("batch_size", 0, "an int >= 1")))
    assert isinstance(e, InputError) and (e.name, e.value, e.expected) == ("batch_size", 0, "an int >= 1")
    assert str(e) == "batch_size=0; expected an int >= 1"
    # a value that cannot be pickled travels as its repr rather than losing the whole error
    e = pickle.loads(pickle.dumps(ParameterError("top_k", lambda: 0, "an int")))
    assert isinstance(e, ParameterError) and e.name == "top_k" and e.value.startswith("<function")
