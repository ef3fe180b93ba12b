"""The daemon's metrics endpoint (`mmshared --metrics`), scraped over its Unix socket and
parsed by the Prometheus project's own Python parser (`prometheus_client.parser`), so the text
must be valid Prometheus exposition format, not merely look like it."""

import os
import socket
import stat
import time

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import mmshare
from conftest import Daemon


def scrape(path: str, request: bytes = b"GET /metrics HTTP/1.1\r\nHost: mmshared\r\n\r\n"):
    """One HTTP request over the Unix socket; (status line, headers, body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert int(headers["Content-Length"]) == len(body)
    return lines[0], headers, body.decode()


def fresh_scrape(path: str):
    """A scrape after the endpoint's reuse period (it serves one rendering for a second, so a
    burst of scrapes costs one): what changed since the last scrape shows."""
    time.sleep(1.1)
    return scrape(path)


def samples(text: str) -> dict:
    """{(sample name, frozenset of labels): value} of every sample in the text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


@pytest.fixture
def metered(daemon_bin, tmp_path):
    d = Daemon(daemon_bin, tmp_path, "--metrics", str(tmp_path / "metrics.sock"))
    d.metrics = str(tmp_path / "metrics.sock")
    yield d
    d.stop()


def test_a_scrape_shows_frames_and_a_stalled_subscribers_lag(metered):
    c = mmshare.connect(metered.socket)
    c.create_stream("camera", "<u4", (16,), slots=8)
    pub = c.publisher("camera")
    stalled = c.subscribe("camera", lossless=True, max_held=1)
    keeping_up = c.subscribe("camera")
    for n in range(5):
        pub.send(np.full(16, n, dtype=np.uint32))
        with keeping_up.receive(timeout=10):
            pass
    array = c.create("state", "<f8", (4, 4))
    for value in (1.0, 2.0):
        with array.write() as view:
            view[:] = value

    status, headers, body = scrape(metered.metrics)
    assert status == "HTTP/1.1 200 OK"
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    got = samples(body)
    stream = frozenset({("name", "camera"), ("owner_uid", str(os.getuid())), ("backing", "file")})
    assert got[("mmshare_stream_frames_total", stream)] == 5
    assert got[("mmshare_stream_published_bytes_total", stream)] == 5 * 16 * 4
    assert got[("mmshare_stream_subscribers", stream)] == 2
    assert got[("mmshare_stream_publisher_attached", stream)] == 1
    assert got[("mmshare_stream_max_lag_frames", stream)] == 5
    pid = str(os.getpid())
    lossless = frozenset({("name", "camera"), ("pid", pid), ("delivery", "lossless")})
    lossy = frozenset({("name", "camera"), ("pid", pid), ("delivery", "lossy")})
    assert got[("mmshare_subscriber_lag_frames", lossless)] == 5
    assert got[("mmshare_subscriber_received_frames_total", lossless)] == 0
    assert got[("mmshare_subscriber_lag_frames", lossy)] == 0
    assert got[("mmshare_subscriber_received_frames_total", lossy)] == 5

    arr = frozenset({("name", "state"), ("owner_uid", str(os.getuid())), ("backing", "file")})
    assert got[("mmshare_array_versions_total", arr)] == 2
    assert got[("mmshare_array_size_bytes", arr)] == 128
    assert got[("mmshare_array_written_bytes_total", arr)] == 256
    assert got[("mmshare_array_torn", arr)] == 0
    assert got[("mmshare_array_recoveries_total", arr)] == 0

    me = str(os.getuid())
    assert got[("mmshare_user_objects", frozenset({("uid", me)}))] == 2
    assert got[("mmshare_user_connections", frozenset({("uid", me)}))] >= 1
    assert got[("mmshare_objects", frozenset())] == 2
    assert got[("mmshare_objects_limit", frozenset())] == 4096
    assert got[("mmshare_requests_total", frozenset({("kind", "create_stream")}))] == 1
    assert got[("mmshare_requests_total", frozenset({("kind", "create")}))] == 1

    with pytest.raises(mmshare.NotFound):
        c.open("nothing")
    got = samples(fresh_scrape(metered.metrics)[2])
    assert got[("mmshare_errors_total", frozenset({("kind", "not_found")}))] == 1
    # The stalled subscriber catches up: its lag is 0 again.
    for _ in range(5):
        with stalled.receive(timeout=10):
            pass
    got = samples(fresh_scrape(metered.metrics)[2])
    assert got[("mmshare_subscriber_lag_frames", lossless)] == 0
    assert got[("mmshare_subscriber_received_frames_total", lossless)] == 5


def test_the_endpoint_is_the_daemons_users_only_and_answers_only_get_metrics(metered):
    mode = os.stat(metered.metrics).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert scrape(metered.metrics, b"GET / HTTP/1.1\r\n\r\n")[0] == "HTTP/1.1 404 Not Found"
    assert scrape(metered.metrics, b"POST /metrics HTTP/1.1\r\n\r\n")[0] == \
        "HTTP/1.1 405 Method Not Allowed"
    # A request that never ends is cut off at 8 KiB, not read forever.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(metered.metrics)
        try:
            s.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            reply = s.recv(100)
        except ConnectionResetError:
            reply = b""
    assert not reply.startswith(b"HTTP/1.1 200"), reply
    # Still serving.
    assert scrape(metered.metrics)[0] == "HTTP/1.1 200 OK"


def test_a_non_loopback_metrics_address_is_refused(daemon_bin, tmp_path):
    import subprocess
    out = subprocess.run([daemon_bin, "--home", str(tmp_path / "h"), "--metrics", "0.0.0.0:9464"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "0.0.0.0:9464 is not a loopback address" in out.stderr, out.stderr


def test_two_subscriptions_of_one_process_are_one_series(metered):
    """Prometheus refuses two samples of one series: two lossy subscriptions of this process
    on one stream are summed (the lag is the larger)."""
    c = mmshare.connect(metered.socket)
    c.create_stream("twice", "<u4", (2,), slots=8)
    pub = c.publisher("twice")
    reading, idle = c.subscribe("twice"), c.subscribe("twice")
    for n in range(3):
        pub.send(np.full(2, n, dtype=np.uint32))
        with reading.receive(timeout=10):
            pass
    status, _, body = scrape(metered.metrics)
    lossy = frozenset({("name", "twice"), ("pid", str(os.getpid())), ("delivery", "lossy")})
    got = samples(body)  # the parser keeps one value per series: count them in the text too
    assert body.count('mmshare_subscriber_lag_frames{name="twice"') == 1, body
    assert got[("mmshare_subscriber_received_frames_total", lossy)] == 3
    assert got[("mmshare_subscriber_lag_frames", lossy)] == 3
    del idle


def test_a_metrics_path_that_is_not_a_stale_socket_is_left_alone(daemon_bin, tmp_path):
    import subprocess
    taken = tmp_path / "metrics.sock"
    taken.write_text("not a socket")
    out = subprocess.run([daemon_bin, "--home", str(tmp_path / "h"), "--no-fd-keeper",
                          "--metrics", str(taken)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "exists and is not a socket" in out.stderr, out.stderr
    assert taken.read_text() == "not a socket"
