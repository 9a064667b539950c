"""demos.common.cache_file: the content-addressed upload cache every streamed frame goes through."""

import os
from pathlib import Path

from demos.common import cache_file


def test_cache_file_is_content_addressed_and_written_once(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    a = cache_file(b"frame-a", "frame.png")
    assert Path(a).read_bytes() == b"frame-a"
    assert Path(a).is_relative_to(tmp_path)  # inside gradio's upload folder, so it may be served
    os.utime(a, (1, 1))  # a later rewrite would move the mtime
    assert cache_file(b"frame-a", "frame.png") == a
    assert os.stat(a).st_mtime == 1  # same bytes: not rewritten
    b = cache_file(b"frame-b", "frame.png")
    assert b != a and Path(b).read_bytes() == b"frame-b"
    assert not list(tmp_path.rglob("*.part"))  # no temp file left behind
