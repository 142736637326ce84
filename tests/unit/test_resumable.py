"""Resumable uploads' pure parts: metadata and checksums from hostile headers, read in bounded work."""

from __future__ import annotations

import base64
import hashlib

import pytest

from transcription.resumable import parse_metadata
from transcription.tus import _checksum


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_resumable_metadata_reads_pairs_and_skips_junk():
    not_utf8 = base64.b64encode(bytes([255])).decode()
    raw = f"filename {b64('talk.wav')}, empty, broken %%%, latin {not_utf8},  "
    assert parse_metadata(raw) == {"filename": "talk.wav", "empty": ""}


def test_resumable_metadata_of_a_huge_header_stays_linear():
    raw = ",".join(f"k{i} {b64('v')}" for i in range(20_000))
    assert len(parse_metadata(raw)) == 20_000
    assert parse_metadata("," * 100_000) == {}


def test_tus_checksum_header():
    digest = hashlib.sha1(b"chunk").digest()
    assert _checksum(None) is None
    assert _checksum("sha1 " + base64.b64encode(digest).decode()) == digest
    for bad in ("md5 abc", "sha1 %%%", "sha1", "crc32 AAAA"):
        with pytest.raises(ValueError, match=r".*"):
            _checksum(bad)
