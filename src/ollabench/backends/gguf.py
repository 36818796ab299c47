"""Is the configured model file a GGUF that llama.cpp can load? Checked before the first
call, so a wrong or damaged file ends in one line naming the file and what is wrong with it,
not in llama-cpp-python's `ValueError: Failed to load model from file` traceback.

The fixed header is read here (ggml's gguf.cpp, gguf_init_from_file_impl: the magic
"GGUF", a uint32 version, uint64 tensor and key-value counts, little-endian); the rest
(metadata, tensor table, tensor data within the file) is left to llama.cpp itself, through
a vocabulary-only load, which reads all of it but no weights.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from ollabench.errors import BackendUnavailable

MAGIC = b"GGUF"
HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, key-value count
VERSIONS = range(1, 4)  # GGUF_VERSION is 3; llama.cpp reads 2 and 3 and refuses 1 itself


def check_header(path: Path) -> None:
    """Raise BackendUnavailable unless `path` starts with a GGUF header of a known version."""
    try:
        with path.open("rb") as file:
            head = file.read(HEADER.size)
    except OSError as exc:
        raise BackendUnavailable(f"model.gguf: cannot read {path}: {exc.strerror}") from None
    if head[:len(MAGIC)] != MAGIC[:len(head)]:
        raise BackendUnavailable(
            f"model.gguf: {path} is not a GGUF file: it starts with {head[:4]!r}, not "
            f"{MAGIC!r}; point model.gguf at a .gguf model file")
    if len(head) < HEADER.size:
        raise BackendUnavailable(
            f"model.gguf: {path} is truncated: {len(head)} bytes, shorter than the "
            f"{HEADER.size}-byte GGUF header; download it again")
    _, version, _, _ = HEADER.unpack(head)
    if version not in VERSIONS:
        raise BackendUnavailable(
            f"model.gguf: {path} has GGUF version {version}, which llama.cpp does not read "
            f"(versions {VERSIONS.start} to {VERSIONS.stop - 1})")


def check_loadable(path: Path, load_vocab: Callable[[Path], None]) -> None:
    """Raise BackendUnavailable if llama.cpp refuses the file after its header: a metadata
    or tensor table cut short, or tensor data beyond the end of the file."""
    check_header(path)
    try:
        load_vocab(path)
    except ValueError:
        size = path.stat().st_size
        raise BackendUnavailable(
            f"model.gguf: {path} ({size} bytes) has a GGUF header but llama.cpp cannot load "
            "it: its metadata or tensors are cut short or damaged (a truncated download?); "
            "download it again") from None
