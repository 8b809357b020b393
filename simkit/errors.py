"""Exceptions shared by every layer.

The CLI turns any :class:`SimkitError` into a one-line message on stderr and exit code 1,
so messages here must stand alone: name the file / line / value and what was expected.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path


class SimkitError(Exception):
    """Base class of the errors simkit raises on purpose."""


class InputError(SimkitError, ValueError):
    """Bad user input: a file, a line, a value or an argument."""


class ParameterError(InputError):
    """A bad value for a named parameter (``batch_size=0; expected an int >= 1``).

    ``name`` is the Python parameter; the CLI reports the error as a usage error (exit 2)
    naming the option that sets it.
    """

    def __init__(self, name: str, value: object, expected: str):
        super().__init__(f"{name}={value!r}; expected {expected}")
        self.name, self.value, self.expected = name, value, expected

    def __reduce__(self):  # pickles across processes (Ray, multiprocessing) with its fields
        try:
            pickle.dumps(self.value)
            value = self.value
        except Exception:
            value = repr(self.value)
        return type(self), (self.name, value, self.expected)


class FormatError(SimkitError):
    """A saved artifact (model, embeddings, index, transform) that cannot be loaded."""


def check_choice(name: str, value: object, valid: tuple | list) -> None:
    """Raise :class:`InputError` echoing ``value`` and listing ``valid`` when it is not one of them."""
    if value not in valid:
        raise InputError(f"unknown {name} {value!r}; expected one of: {', '.join(map(str, valid))}")


def no_file(path: str | os.PathLike) -> InputError:
    """The error for an input file that cannot be opened: a directory, or nothing, at ``path``.

    >>> str(no_file("/"))
    '/: is a directory; expected a file'
    """
    if Path(path).is_dir():
        return InputError(f"{path}: is a directory; expected a file")
    return InputError(f"{path}: no such file")
