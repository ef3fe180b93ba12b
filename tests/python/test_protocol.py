"""The Python client speaks the same bytes as the Rust side: every vector of
docs/protocol_vectors.json, in both directions, checked against its decoded `value`."""

import dataclasses
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
                                    f["backing"] == "Memory", f["mode"], f["exist_ok"],
                                    f.get("stripes", 0), f.get("sparse", False))
    if variant == "Open":
        return _proto.encode_open(f["name"], f["access"] == "Write")
    if variant == "Stat":
        return _proto.encode_stat(f["name"])
    if variant == "List":
        return _proto.encode_list(f["prefix"], f["after"])
    if variant == "Delete":
        return _proto.encode_delete(f["name"])
    if variant == "CreateStream":
        on_stall, after_ms = stall(f.get("stall", "Block"))
        return _proto.encode_create_stream(f["name"], f["dtype"], f["shape"], f["order"],
                                           f["slots"], f["max_subscribers"],
                                           f["backing"] == "Memory", f["mode"], f["exist_ok"],
                                           on_stall, after_ms, f.get("history", 0),
                                           f.get("header", ""), f.get("variable", False),
                                           f.get("max_publishers", 0))
    if variant == "OpenStream":
        return _proto.encode_open_stream(f["name"], f["role"].lower())
    if variant == "ListAll":
        return _proto.encode_list_all(f["prefix"], f["after"])
    if variant == "WaitFor":
        return _proto.encode_wait_for(f["name"], f["timeout_ms"])
    if variant == "Watch":
        return _proto.encode_watch(f["prefix"])
    raise AssertionError(f"unknown request variant {variant}")


def info(v):
    return _proto.ArrayInfo(
        name=v["name"], dtype=v["dtype"], shape=tuple(v["shape"]), order=v["order"],
        data_offset=v["data_offset"], data_len=v["data_len"], version=v["version"],
        backing=v["backing"].lower(), owner_uid=v["owner_uid"], owner_gid=v["owner_gid"],
        mode=v["mode"], torn=v["torn"], path=v["path"], stripe_bytes=v.get("stripe_bytes", 0),
        sparse=v.get("sparse", False))


def stall(v):
    """A WireStall as the vector file writes it ("Block", or {"Demote": {"after_ms": N}}):
    (on_stall, after_ms)."""
    if v == "Block":
        return "block", 0
    (kind, fields), = v.items()
    return kind.lower(), fields["after_ms"]


def stream_info(v):
    on_stall, after_ms = stall(v.get("stall", "Block"))
    return _proto.StreamInfo(
        name=v["name"], dtype=v["dtype"], shape=tuple(v["shape"]), order=v["order"],
        slots=v["slots"], max_subscribers=v["max_subscribers"], data_offset=v["data_offset"],
        frame_len=v["frame_len"], slot_stride=v["slot_stride"], published=v["published"],
        backing=v["backing"].lower(), owner_uid=v["owner_uid"], owner_gid=v["owner_gid"],
        mode=v["mode"], path=v["path"], publisher=v["publisher"],
        subscribers=tuple(_proto.SubscriberStat(**s) for s in v["subscribers"]),
        on_stall=on_stall, stall_after=after_ms / 1000, history=v.get("history", 0),
        header=v.get("header", ""), variable=v.get("variable", False),
        max_publishers=v.get("max_publishers", 0), publishers=tuple(v.get("publishers", ())))


def object_info(v):
    (kind, fields), = v.items()
    return info(fields) if kind == "Array" else stream_info(fields)


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
    if variant == "Stream":
        return ("stream", stream_info(f))
    if variant == "Objects":
        return ("objects", ([object_info(o) for o in f["objects"]], f["more"]))
    if variant == "Event":
        if f == "Ready":
            return ("event", ("Ready", {}))
        (kind, fields), = f.items()
        return ("event", (kind, fields))
    assert variant == "Error"
    return None


def variant(entry):
    value = entry["value"]
    return value if isinstance(value, str) else next(iter(value))


def test_the_vectors_cover_every_message_and_error_kind():
    assert len(REQUESTS) >= 17 and len(RESPONSES) >= 25
    assert {variant(e) for e in REQUESTS} == {
        "Hello", "Create", "Open", "Stat", "List", "Delete", "CreateStream", "OpenStream",
        "ListAll", "WaitFor", "Watch"}
    assert {variant(e) for e in RESPONSES} == {
        "Hello", "Array", "List", "Deleted", "Error", "Stream", "Objects", "Event"}
    events = {e["value"]["Event"] if isinstance(e["value"]["Event"], str)
              else next(iter(e["value"]["Event"])) for e in RESPONSES if variant(e) == "Event"}
    assert events == set(_proto.EVENTS)
    kinds = {e["value"]["Error"]["kind"] for e in RESPONSES if "Error" in e["value"]}
    assert kinds == {cls.kind for cls in errors.BY_INDEX}
    roles = {e["value"]["OpenStream"]["role"] for e in REQUESTS if variant(e) == "OpenStream"}
    assert roles == {"Publish", "Subscribe"}
    objects = [o for e in RESPONSES if variant(e) == "Objects"
               for o in e["value"]["Objects"]["objects"]]
    assert {next(iter(o)) for o in objects} == {"Array", "Stream"}


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


POINTS = _proto.StreamInfo(
    name="points", dtype="<f4", shape=(100, 3), order="C", slots=8, max_subscribers=16,
    data_offset=8192, frame_len=1200, slot_stride=4096, published=300, backing="memory",
    owner_uid=1000, owner_gid=100, mode=0o640, path="/dev/shm/mmshare-1000/points",
    publisher=4242, subscribers=(
        _proto.SubscriberStat(pid=4243, lossless=True, max_held=2, lag=0, missed=0, received=300),
        _proto.SubscriberStat(pid=4250, lossless=False, max_held=4, lag=3, missed=131,
                              received=66)))


def test_the_stream_vectors_are_the_documented_examples():
    assert _proto.encode_create_stream("points", "<f4", (100, 3), "C", 8, 16, True, 0o640,
                                       False) == VECTORS["CreateStream request"]
    assert _proto.encode_open_stream("points", "subscribe") == VECTORS["OpenStream request (subscribe)"]
    assert _proto.encode_list_all("", None) == VECTORS["ListAll request, first page"]
    assert _proto.decode_response(VECTORS["Stream reply"]) == ("stream", POINTS)
    kind, (objects, more) = _proto.decode_response(VECTORS["Objects reply"])
    assert (kind, more) == ("objects", False)
    assert objects == [INFO, dataclasses.replace(POINTS, subscribers=())]
    with pytest.raises(errors.WrongKind, match='"frames" is an array, not a stream'):
        _proto.decode_response(VECTORS["Error reply (WrongKind)"])


def test_stream_requests_refuse_what_they_cannot_encode():
    with pytest.raises(ValueError, match="role"):
        _proto.encode_open_stream("points", "Publish")
    with pytest.raises(ValueError, match="order"):
        _proto.encode_create_stream("points", "<f4", (1,), "A", 8, 16, True, 0o600, False)
    with pytest.raises(ValueError, match="slots"):
        _proto.encode_create_stream("points", "<f4", (1,), "C", 1 << 32, 16, True, 0o600, False)
    with pytest.raises(errors.InvalidShape):
        _proto.encode_create_stream("points", "<f4", (-1,), "C", 8, 16, True, 0o600, False)


def test_damaged_replies_are_protocol_errors_not_crashes():
    for entry in RESPONSES:
        raw = bytes.fromhex(entry["hex"])
        for cut in range(len(raw)):
            with pytest.raises(mmshare.MmshareError):
                _proto.decode_response(raw[:cut])
        if "Error" not in entry["value"]:
            with pytest.raises(mmshare.ProtocolError):
                _proto.decode_response(raw + b"\x00")
    with pytest.raises(mmshare.ProtocolError, match="unknown Response variant 8"):
        _proto.decode_response(b"\x08")
    with pytest.raises(mmshare.ProtocolError, match="WatchEvent"):
        _proto.decode_response(b"\x07\x05")
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


def test_bad_stream_replies_are_refused_by_name():
    # An Objects reply whose one object has the unknown ObjectInfo variant 2.
    with pytest.raises(mmshare.ProtocolError, match="unknown ObjectInfo value 2"):
        _proto.decode_response(bytes.fromhex("06 01 02 00"))
    # An Objects reply claiming more objects than bytes follow.
    with pytest.raises(mmshare.ProtocolError, match="objects claims 5 entries"):
        _proto.decode_response(bytes.fromhex("06 05 00"))
    # The Stream reply with its publisher Option tag set to 2.
    raw = bytearray(VECTORS["Stream reply"])
    path = b"/dev/shm/mmshare-1000/points"
    at = raw.index(path) + len(path)
    assert raw[at] == 1
    raw[at] = 2
    with pytest.raises(mmshare.ProtocolError, match="bad Option tag 2 for publisher"):
        _proto.decode_response(bytes(raw))
    # ErrorKind 13 does not exist (12 is Timeout).
    with pytest.raises(mmshare.Timeout):
        _proto.decode_response(bytes.fromhex("04 0c 00"))
    with pytest.raises(mmshare.ProtocolError, match="unknown error kind 13"):
        _proto.decode_response(bytes.fromhex("04 0d 00"))
