"""Atomic writes: a file is either the old one or the complete new one, never half of either."""

from __future__ import annotations

import os

import pytest

from torchformers.files import atomic_destination, atomic_write_text


def test_atomic_write_text_creates_directories_and_writes_utf8(tmp_path):
    target = tmp_path / "a" / "b" / "c.json"
    atomic_write_text(target, '{"name": "größe"}')
    assert target.read_text(encoding="utf-8") == '{"name": "größe"}'
    assert os.listdir(target.parent) == ["c.json"]
    assert os.stat(target).st_mode & 0o777 == 0o644


def test_atomic_destination_replaces_only_on_success(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")

    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_destination(target) as temporary:
            assert os.path.dirname(temporary) == str(tmp_path)
            with open(temporary, "wb") as handle:
                handle.write(b"half")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["data.bin"]

    with atomic_destination(target) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_atomic_destination_tolerates_a_writer_that_removed_its_file(tmp_path):
    with pytest.raises(ValueError):
        with atomic_destination(tmp_path / "x") as temporary:
            os.remove(temporary)
            raise ValueError("gave up")
    assert os.listdir(tmp_path) == []
