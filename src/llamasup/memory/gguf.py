"""What the memory estimate needs from a GGUF file: hyperparameters and tensor sizes.

This reads only the header (key/values and tensor infos) through an mmap, skipping long arrays
without decoding them. ``gguf.GGUFReader`` decodes every element of every array, which takes
~10 s for a model with a 262k-token vocabulary; this takes a fraction of a second. The GGUF
type tables (value types, quantization block sizes) come from the ``gguf`` package.

Split models (``name-00001-of-00003.gguf``) are read shard by shard for their tensor sizes.
"""

from __future__ import annotations

import mmap
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llamasup.errors import LlamasupError
from llamasup.memory import ggml
from llamasup.memory.ggml import ValueType as GGUFValueType

_MAGIC = b"GGUF"
#: numeric arrays longer than this (vocab scores, token types...) are skipped, not decoded
_KEEP_ARRAY_MAX = 4096
_SCALAR_FORMATS: dict[int, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
_SPLIT_NAME = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")

Value = int | float | bool | str | tuple[int | float | bool | str, ...]


class ModelMetadataError(LlamasupError):
    """A GGUF file is missing, unreadable, or lacks what the memory estimate needs."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class GGUFHeader:
    """Key/values (long arrays reduced to their length) and total tensor data bytes."""

    path: str
    metadata: Mapping[str, Value]
    array_lengths: Mapping[str, int]
    tensor_bytes: int
    tensor_count: int
    #: (name, data bytes) of every tensor, in file order (all shards of a split model)
    tensors: tuple[tuple[str, int], ...] = ()


class _Cursor:
    def __init__(self, buffer: mmap.mmap, path: Path) -> None:
        self.buffer = buffer
        self.offset = 0
        self.path = path

    def unpack(self, fmt: str) -> int | float | bool:
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.buffer):
            raise ModelMetadataError(self.path, "truncated GGUF header")
        (value,) = struct.unpack_from(fmt, self.buffer, self.offset)
        self.offset += size
        return value  # type: ignore[no-any-return]

    def u32(self) -> int:
        return int(self.unpack("<I"))

    def u64(self) -> int:
        return int(self.unpack("<Q"))

    def string(self) -> str:
        length = self.u64()
        end = self.offset + length
        if end > len(self.buffer):
            raise ModelMetadataError(self.path, "truncated GGUF header (string)")
        raw = self.buffer[self.offset : end]
        self.offset = end
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        buffer, offset, unpack = self.buffer, self.offset, struct.unpack_from
        for _ in range(count):
            (length,) = unpack("<Q", buffer, offset)
            offset += 8 + length
        if offset > len(buffer):
            raise ModelMetadataError(self.path, "truncated GGUF header (string array)")
        self.offset = offset

    def value(self, value_type: int) -> Value:
        if value_type == GGUFValueType.STRING:
            return self.string()
        if value_type == GGUFValueType.ARRAY:
            raise ModelMetadataError(self.path, "nested GGUF arrays are not supported")
        fmt = _SCALAR_FORMATS.get(value_type)
        if fmt is None:
            raise ModelMetadataError(self.path, f"unknown GGUF value type {value_type}")
        return self.unpack(fmt)


def read_header(path: str | Path) -> GGUFHeader:
    """Read one GGUF file's header; raise ModelMetadataError with the path on any problem."""
    file = Path(path)
    try:
        with file.open("rb") as handle:
            if file.stat().st_size < 24:
                raise ModelMetadataError(file, "not a GGUF file (too short)")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return _parse(_Cursor(mm, file))
    except ModelMetadataError:
        raise
    except FileNotFoundError as exc:
        raise ModelMetadataError(file, "no such file") from exc
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise ModelMetadataError(file, f"cannot read GGUF: {exc}") from exc


def _parse(cursor: _Cursor) -> GGUFHeader:
    path = cursor.path
    if cursor.buffer[:4] != _MAGIC:
        raise ModelMetadataError(path, "not a GGUF file (bad magic)")
    cursor.offset = 4
    version = cursor.u32()
    if version not in (2, 3):
        raise ModelMetadataError(path, f"unsupported GGUF version {version} (expected 2 or 3)")
    tensor_count = cursor.u64()
    kv_count = cursor.u64()
    metadata: dict[str, Value] = {}
    lengths: dict[str, int] = {}
    for _ in range(kv_count):
        key = cursor.string()
        value_type = cursor.u32()
        if value_type != GGUFValueType.ARRAY:
            metadata[key] = cursor.value(value_type)
            continue
        item_type = cursor.u32()
        count = cursor.u64()
        lengths[key] = count
        if item_type == GGUFValueType.STRING:
            if count <= _KEEP_ARRAY_MAX:
                metadata[key] = tuple(cursor.string() for _ in range(count))
            else:
                cursor.skip_strings(count)
            continue
        fmt = _SCALAR_FORMATS.get(item_type)
        if fmt is None:
            raise ModelMetadataError(path, f"{key}: unsupported GGUF array item type {item_type}")
        if count <= _KEEP_ARRAY_MAX:
            metadata[key] = tuple(cursor.unpack(fmt) for _ in range(count))
        else:
            cursor.offset += struct.calcsize(fmt) * count
    tensors: list[tuple[str, int]] = []
    for _ in range(tensor_count):
        name = cursor.string()
        n_dims = cursor.u32()
        elements = 1
        for _ in range(n_dims):
            elements *= cursor.u64()
        ggml_type = cursor.u32()
        cursor.u64()  # data offset
        tensors.append((name, _tensor_bytes(path, name, ggml_type, elements)))
    total = sum(size for _, size in tensors)
    return GGUFHeader(str(path), metadata, lengths, total, tensor_count, tuple(tensors))


def _tensor_bytes(path: Path, name: str, ggml_type: int, elements: int) -> int:
    try:
        block, size = ggml.block(ggml_type)
    except KeyError as exc:
        raise ModelMetadataError(path, f"tensor {name}: unknown ggml type {ggml_type}") from exc
    return (elements + block - 1) // block * size


def read_model(path: str | Path) -> GGUFHeader:
    """The header of a model, with ``tensor_bytes`` summed over all shards of a split model."""
    first = read_header(path)
    split_count = first.metadata.get("split.count", 1)
    if not isinstance(split_count, int) or split_count <= 1:
        return first
    match = _SPLIT_NAME.match(Path(path).name)
    if match is None:
        raise ModelMetadataError(
            path, f"split model ({split_count} parts) without the -NNNNN-of-NNNNN.gguf name"
        )
    prefix = Path(path).with_name(match["prefix"])
    total, tensors, infos = first.tensor_bytes, first.tensor_count, list(first.tensors)
    first_no = int(match["no"])
    for number in range(1, split_count + 1):
        if number == first_no:
            continue
        shard = read_header(f"{prefix}-{number:05d}-of-{split_count:05d}.gguf")
        total += shard.tensor_bytes
        tensors += shard.tensor_count
        infos += shard.tensors
    return GGUFHeader(first.path, first.metadata, first.array_lengths, total, tensors, tuple(infos))
