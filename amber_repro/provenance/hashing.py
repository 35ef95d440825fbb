"""Content hashes of files and model folders, as records and the crate name them."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# The files of a save_pretrained folder that decide what the model computes (not its records:
# the card and amber_repro.json hold timings, TensorBoard files wall times and host names).
MODEL_FILE_PATTERNS = ("*.safetensors", "config.json", "generation_config.json", "tokenizer*")


def sha256_model(folder: str | Path) -> dict[str, str]:
    """sha256 of a model folder's weights, configs and tokenizer files, keyed by name."""
    folder = Path(folder)
    files = {f for pattern in MODEL_FILE_PATTERNS for f in folder.glob(pattern) if f.is_file()}
    return {f.name: sha256_file(f) for f in sorted(files)}
