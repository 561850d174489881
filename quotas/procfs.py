"""Small, allocation-light readers of ``/proc`` files (``ProcessScanner``'s hot path)."""

from __future__ import annotations

import ipaddress
import os

TCP_ESTABLISHED = "01"


def read_bytes(path: str, limit: int | None = None) -> bytes:
    """The file's bytes (its first ``limit`` where given); b"" where it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        chunks = []
        want = 65536 if limit is None else min(65536, limit)
        while want > 0 and (chunk := os.read(fd, want)):
            chunks.append(chunk)
            if limit is not None:
                limit -= len(chunk)
                want = min(65536, limit)
        return b"".join(chunks)
    except OSError:
        return b""
    finally:
        os.close(fd)


def read_text(path: str, limit: int | None = None) -> str:
    return read_bytes(path, limit).decode(errors="replace")


def readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def tcp_table(path: str) -> dict[str, tuple[str, int]]:
    """socket inode → remote (ip, port) of established connections in a /proc/net/tcp file."""
    table: dict[str, tuple[str, int]] = {}
    for line in read_text(path).splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10 or parts[3] != TCP_ESTABLISHED:
            continue
        address, _, port = parts[2].partition(":")
        table[parts[9]] = (_ip(address), int(port, 16))
    return table


def _ip(hex_address: str) -> str:
    """The kernel writes addresses as host-order 32-bit words in hex."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return ".".join(str(b) for b in words)
    address = ipaddress.IPv6Address(words)
    return str(address.ipv4_mapped or address)
