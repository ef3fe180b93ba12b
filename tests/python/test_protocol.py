"""The Python client speaks the same bytes as the Rust side: every vector of
docs/protocol_vectors.json, in both directions, checked against its decoded `value`."""

import json
import pathlib

import pytest

import mmshare
from mmshare import _proto, errors

ENTRIES = json.loads(
    (pathlib.Path(__file__).resolve().parents[2] / "docs" / "protocol_vectors.json").read_text())
VECTORS = {v["name"]: bytes.fromhex(v["hex"]) for v in ENTRIES}
REQUESTS = [e for e in ENTRIES if e["type"] == "Request"]
RESPONSES = [e for e in ENTRIES if e["type"] == "Response"]

INFO = _proto.ArrayInfo(name="frames", dtype="<f4", shape=(2, 3), order="C", data_offset=4096,
                        data_len=24, version=300, backing="memory", owner_uid=1000,
                        owner_gid=100, mode=0o644, torn=False, path="/m/frames")


def encode_request(value):
    """The Python client's encoding of a request given as the vector file's `value`."""
    (variant, f), = value.items()
    if variant == "Hello":
        return _proto.encode_hello(f["client"], f["version"])
    if variant == "Create":
        return _proto.encode_create(f["name"], f["dtype"], f["shape"], f["order"],
                                    f["backing"] == "Memory", f["mode"], f["exist_ok"])
    if variant == "Open":
        return _proto.encode_open(f["name"], f["access"] == "Write")
    if variant == "Stat":
        return _proto.encode_stat(f["name"])
    if variant == "List":
        return _proto.encode_list(f["prefix"], f["after"])
    if variant == "Delete":
        return _proto.encode_delete(f["name"])
    raise AssertionError(f"unknown request variant {variant}")


def info(v):
    return _proto.ArrayInfo(
        name=v["name"], dtype=v["dtype"], shape=tuple(v["shape"]), order=v["order"],
        data_offset=v["data_offset"], data_len=v["data_len"], version=v["version"],
        backing=v["backing"].lower(), owner_uid=v["owner_uid"], owner_gid=v["owner_gid"],
        mode=v["mode"], torn=v["torn"], path=v["path"])


def expected_reply(value):
    """What decode_response returns for a reply given as the vector file's `value` (None for
    an Error, which is raised)."""
    if value == "Deleted":
        return ("deleted", None)
    (variant, f), = value.items()
    if variant == "Hello":
        return ("hello", (f["version"], f["server"]))
    if variant == "Array":
        return ("array", info(f))
    if variant == "List":
        return ("list", ([info(a) for a in f["arrays"]], f["more"]))
    assert variant == "Error"
    return None


def test_the_vectors_cover_every_message_and_error_kind():
    assert len(REQUESTS) >= 11 and len(RESPONSES) >= 19
    kinds = {e["value"]["Error"]["kind"] for e in RESPONSES if "Error" in e["value"]}
    assert kinds == {cls.kind for cls in errors.BY_INDEX}


@pytest.mark.parametrize("entry", REQUESTS, ids=[e["name"] for e in REQUESTS])
def test_requests_encode_to_the_vectors(entry):
    assert encode_request(entry["value"]).hex(" ") == entry["hex"]


@pytest.mark.parametrize("entry", RESPONSES, ids=[e["name"] for e in RESPONSES])
def test_replies_decode_from_the_vectors(entry):
    raw = bytes.fromhex(entry["hex"])
    want = expected_reply(entry["value"])
    if want is not None:
        assert _proto.decode_response(raw) == want
        return
    err = entry["value"]["Error"]
    with pytest.raises(mmshare.MmshareError) as caught:
        _proto.decode_response(raw)
    assert type(caught.value).kind == err["kind"]
    assert str(caught.value) == err["message"]


def test_the_first_vectors_are_the_documented_examples():
    assert _proto.encode_create("frames", "<f4", (2, 3), "C", True, 0o644, True) == VECTORS["Create request"]
    assert _proto.decode_response(VECTORS["Array reply"]) == ("array", INFO)
    with pytest.raises(mmshare.NotFound, match='no array named "x"'):
        _proto.decode_response(VECTORS["Error reply (NotFound)"])


def test_damaged_replies_are_protocol_errors_not_crashes():
    for entry in RESPONSES:
        raw = bytes.fromhex(entry["hex"])
        for cut in range(len(raw)):
            with pytest.raises(mmshare.MmshareError):
                _proto.decode_response(raw[:cut])
        if "Error" not in entry["value"]:
            with pytest.raises(mmshare.ProtocolError):
                _proto.decode_response(raw + b"\x00")
    with pytest.raises(mmshare.ProtocolError):
        _proto.decode_response(b"\x09")
    with pytest.raises(mmshare.ProtocolError):
        _proto.decode_response(b"\x01" + b"\xff" * 12)


def test_non_minimal_varints_and_unknown_values_are_refused_by_name():
    # Deleted as `83 00` instead of `03`.
    with pytest.raises(mmshare.ProtocolError, match="non-minimal varint for 3"):
        _proto.decode_response(b"\x83\x00")
    # The Array reply with its order byte set to 2.
    raw = bytearray(VECTORS["Array reply"])
    order_at = 1 + 7 + 4 + 3  # tag, "frames", "<f4", shape [2, 3]
    assert raw[order_at] == 0
    raw[order_at] = 2
    with pytest.raises(mmshare.ProtocolError, match="unknown Order value 2"):
        _proto.decode_response(bytes(raw))
