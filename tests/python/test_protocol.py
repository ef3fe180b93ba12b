"""The Python client speaks the same bytes as the Rust side: docs/protocol_vectors.json."""

import json
import pathlib

import pytest

import mmshare
from mmshare import _proto

VECTORS = {v["name"]: bytes.fromhex(v["hex"]) for v in json.loads(
    (pathlib.Path(__file__).resolve().parents[2] / "docs" / "protocol_vectors.json").read_text())}

INFO = _proto.ArrayInfo(name="frames", dtype="<f4", shape=(2, 3), order="C", data_offset=4096,
                        data_len=24, version=300, backing="memory", owner_uid=1000,
                        owner_gid=100, mode=0o644, torn=False, path="/m/frames")


def test_requests_encode_to_the_vectors():
    assert _proto.encode_hello("py") == VECTORS["Hello request"]
    assert _proto.encode_create("frames", "<f4", (2, 3), "C", True, 0o644, True) == VECTORS["Create request"]
    assert _proto.encode_open("frames", True) == VECTORS["Open request (write)"]
    assert _proto.encode_stat("frames") == VECTORS["Stat request"]
    assert _proto.encode_list("fr", None) == VECTORS["List request, first page"]
    assert _proto.encode_list("", "a") == VECTORS["List request, next page"]
    assert _proto.encode_delete("frames") == VECTORS["Delete request"]


def test_replies_decode_from_the_vectors():
    assert _proto.decode_response(VECTORS["Hello reply"]) == ("hello", (1, "mmshared 0.1.0"))
    assert _proto.decode_response(VECTORS["Array reply"]) == ("array", INFO)
    assert _proto.decode_response(VECTORS["List reply"]) == ("list", ([INFO], False))
    assert _proto.decode_response(VECTORS["Deleted reply"]) == ("deleted", None)
    with pytest.raises(mmshare.NotFound, match='no array named "x"'):
        _proto.decode_response(VECTORS["Error reply"])


def test_damaged_replies_are_protocol_errors_not_crashes():
    for name, raw in VECTORS.items():
        if "reply" not in name:
            continue
        for cut in range(len(raw)):
            with pytest.raises(mmshare.MmshareError):
                _proto.decode_response(raw[:cut])
        if name != "Error reply":
            with pytest.raises(mmshare.ProtocolError):
                _proto.decode_response(raw + b"\x00")
    with pytest.raises(mmshare.ProtocolError):
        _proto.decode_response(b"\x09")
    with pytest.raises(mmshare.ProtocolError):
        _proto.decode_response(b"\x01" + b"\xff" * 12)
