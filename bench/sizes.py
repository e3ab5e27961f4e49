"""Deployment sizes: the binary as built, whether it is stripped, and zipped as Lambda takes it.

A ``provided.al2023`` function's code is a zip with an executable ``bootstrap`` at its root
(<https://docs.aws.amazon.com/lambda/latest/dg/runtimes-custom.html>); ``cargo lambda build
--output-format zip`` makes the same. Here: deflate at zlib's default level, mode 0755.
"""

from __future__ import annotations

import io
import struct
import sys
import zipfile
from pathlib import Path


def elf_sections(path: Path) -> set[str]:
    """Section names of a 64-bit little-endian ELF file (empty if it is not one)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return set()
    e_shoff = struct.unpack_from("<Q", data, 0x28)[0]
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    strtab_off, strtab_size = headers[e_shstrndx][4], headers[e_shstrndx][5]
    strtab = data[strtab_off : strtab_off + strtab_size]
    return {strtab[h[0] : strtab.index(b"\0", h[0])].decode() for h in headers}


def zip_entries(entries: dict[str, bytes], executable: set[str] = frozenset()) -> int:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, content in entries.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = ((0o100755 if name in executable else 0o100644) & 0xFFFF) << 16
            z.writestr(info, content)
    return len(buf.getvalue())


def binary(path: Path) -> dict:
    sections = elf_sections(path)
    return {
        "bytes": path.stat().st_size,
        "stripped": ".symtab" not in sections and not any(s.startswith(".debug") for s in sections),
        "zip_bytes": zip_entries({"bootstrap": path.read_bytes()}, {"bootstrap"}),
    }


def python_handler(handler: Path) -> dict:
    """The baseline's own code (boto3 comes with the Python runtime in Lambda)."""
    data = handler.read_bytes()
    return {"bytes": len(data), "stripped": None, "zip_bytes": zip_entries({handler.name: data})}


def vendored_boto3() -> dict:
    """boto3 and its dependencies as they would be vendored into a zip (to pin versions)."""
    packages = ["boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py"]
    site = next(Path(p) for p in sys.path if p.endswith("site-packages") and (Path(p) / "botocore").is_dir())
    entries: dict[str, bytes] = {}
    for name in packages:
        root = site / name
        files = [root] if root.is_file() else [f for f in root.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
        for f in files:
            entries[str(f.relative_to(site))] = f.read_bytes()
    return {"bytes": sum(len(v) for v in entries.values()), "zip_bytes": zip_entries(entries), "packages": packages}
