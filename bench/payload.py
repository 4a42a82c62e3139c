"""What the bench syncs: a seeded tree of small files, large files of random bytes."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

PER_DIRECTORY = 100
SMALLEST, LARGEST = 100, 8704  # bytes: 100 B to 8.5 KiB


def noise(seed: int) -> Callable[[int], bytes]:
    """A source of pseudo-random bytes, the same for the same seed (AES-CTR: a GiB a second)."""
    encryptor = Cipher(algorithms.AES(seed.to_bytes(32, "big")), modes.CTR(bytes(16))).encryptor()
    return lambda n: encryptor.update(bytes(n))


@dataclass(frozen=True, slots=True)
class Tree:
    """A generated tree: where, how many files, their bytes, and every path with its size."""

    root: Path
    files: int
    size: int
    shape: dict[str, int]


def small_files(root: Path, files: int, seed: int = 1) -> Tree:
    """`files` files of random size and content in directories of 100."""
    sizes = random.Random(seed)
    take = noise(seed)
    total = 0
    for i in range(files):
        directory = root / f"d{i // PER_DIRECTORY:04d}"
        if i % PER_DIRECTORY == 0:
            directory.mkdir(parents=True)
        size = sizes.randint(SMALLEST, LARGEST)
        (directory / f"f{i % PER_DIRECTORY:02d}.dat").write_bytes(take(size))
        total += size
    return Tree(root, files, total, shape(root))


def large_file(path: Path, size: int, seed: int) -> None:
    """A file of `size` random bytes (whole MiBs)."""
    take = noise(seed)
    with path.open("wb") as f:
        for _ in range(size >> 20):
            f.write(take(1 << 20))


def shape(root: Path) -> dict[str, int]:
    """Every path under root but the marker, with its size (-1 for a directory): a cheap
    walk of stats that tells whether two trees can be the same before hashing them."""
    found: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root:
            dirnames[:] = [d for d in dirnames if d != ".meshsync"]
        rel = here.relative_to(root)
        found.update((str(rel / name), -1) for name in dirnames)
        for name in filenames:
            try:
                found[str(rel / name)] = (here / name).lstat().st_size
            except FileNotFoundError:
                found[str(rel / name)] = -2  # went while we looked
    return found


def has_size(path: Path, size: int) -> bool:
    """Whether a file is there with `size` bytes (meshsync renames a file in once it is whole)."""
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def byte_at(path: Path, offset: int) -> bytes:
    """The byte of a file at `offset` (empty if the file is not there)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return b""
    try:
        return os.pread(fd, 1, offset)
    finally:
        os.close(fd)


def has_byte(path: Path, offset: int, byte: bytes) -> bool:
    """Whether a file holds `byte` at `offset`."""
    return byte_at(path, offset) == byte
