"""Durable writes from Python (`SharedArray.write(durable=True)`): the version is on disk when
the block ends. What a crash leaves on disk in between is tested in Rust
(`raw::tests::a_durable_write_commits_on_disk_only_after_its_data_and_a_crash_between_is_torn`);
here: it writes, versions move as for any write, and the file itself holds the data."""

import numpy as np

import mmshare


def test_a_durable_write_is_a_write_and_is_in_the_file(daemon):
    c = mmshare.connect(daemon.socket)
    a = c.create("kept", "<f8", (1000,))
    v = a.version
    with a.write(durable=True) as view:
        view[:] = np.arange(1000, dtype=np.float64)
    assert a.version == v + 1
    assert np.array_equal(a.read(), np.arange(1000, dtype=np.float64))
    # The file (not the page cache's view through the mapping) holds it: read it with plain
    # reads at the data offset.
    info = c.stat("kept")
    with open(info.path, "rb") as f:
        f.seek(info.data_offset)
        on_file = np.frombuffer(f.read(8000), dtype="<f8")
    assert np.array_equal(on_file, np.arange(1000, dtype=np.float64))
    a.close()
