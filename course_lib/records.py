"""Shipped weights and their JSON records.

Every network the course ships (the course model, ``data/course_model.pt``; the fast-style
networks in ``data/fast_style/``) has a JSON record beside its weights file (same name, suffix
``.json``): how the network is built and was trained, and ``weights_sha256``, the sha256 of the
weights file. :func:`load_weights` reads both and refuses a weights file whose bytes are not the
ones its record describes: a corrupt, truncated or replaced file fails loudly instead of loading
other numbers. Every problem raises a :class:`course_lib.data.DataError` that names the file.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .data import ChecksumError, DataError, sha256_of


def read_record(path: Path | str, keys=(), fix: str = "restore it from the repository") -> dict:
    """The JSON object in the file ``path``, holding at least ``keys``. A missing file, one that is not
    JSON or not a JSON object, or one without some of ``keys`` raises :class:`course_lib.data.DataError`
    naming the file (and the keys) and saying how to ``fix`` it."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} is missing: {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}): {fix}") from None
    if not isinstance(record, dict):
        raise DataError(f"{path} must hold a JSON object (a network's record), got {type(record).__name__}: {fix}")
    missing = [key for key in dict.fromkeys(keys) if key not in record]
    if missing:
        raise DataError(f"{path} is incomplete: it lacks the key(s) {', '.join(missing)}; {fix}")
    return record


def load_weights(weights: Path | str, keys=(), fix: str = "restore it from the repository") -> tuple[dict, dict]:
    """``(state_dict, record)``: the tensors saved in ``weights`` and its JSON record (the same path with
    the suffix ``.json``, holding ``keys`` and ``weights_sha256``), once the file's sha256 is the record's.

    A missing or bad record (:func:`read_record`) or a missing weights file raises
    :class:`course_lib.data.DataError`; a weights file with other bytes,
    :class:`course_lib.data.ChecksumError`. Each names the file and says how to ``fix`` it."""
    weights = Path(weights)
    record_path = weights.with_suffix(".json")
    record = read_record(record_path, (*keys, "weights_sha256"), fix)
    if not weights.exists():
        raise DataError(f"{weights} is missing (its record {record_path.name} is there): {fix}")
    actual = sha256_of(weights)
    if actual != record["weights_sha256"]:
        raise ChecksumError(f"{weights} is corrupt or was replaced: sha256 {actual}, expected "
                            f"{record['weights_sha256']} (from {record_path.name}); {fix}")
    return torch.load(weights, map_location="cpu", weights_only=True), record
