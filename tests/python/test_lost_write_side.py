"""A Python writer that loses its write side behaves as the Rust writer (it is the Rust writer:
mmshare-lib/src/array/raw.rs `acquire_write_as`, `record_writer`, `publish`, `mark_torn_after_loss`,
run by `mmshare._native`): it raises `LostWriteSide`, never moves the sequence backwards, never
publishes a write that is not its own, and leaves the array TORN.

The test plays the recovery that (wrongly) judged the writer dead, from inside the writer's
`with a.write()` block: it claims the writer word with its own identity, takes the sequence
over from odd s + 1 to s + 3, sets TORN and publishes s + 4, as `take_over` does. Other
writers are real processes (mmshare-test-worker). The header is read and changed through a
mapping of its own, at the offsets of docs/FORMAT.md. Where the recovery must act while the
writer waits (a claimed writer word is followed by a hand-back or a takeover), it runs in a
thread that acts after ~0.2 s; if it acted before the writer reached its wait, the outcome
asserted is the same. The interleavings that need a hook inside the writer's steps (a
takeover between its sequence CAS and its record) are tested in Rust (`raw::tests`).
"""

import mmap
import select
import subprocess
import threading
import time

import numpy as np
import pytest

import mmshare
from atomics import compare_exchange_u64, process_identity

SEQUENCE, WRITER, FLAGS, WRITE_COUNT = 0x400, 0x480, 0x4C0, 0x500
TORN = 1


class Header:
    """The array file's header page, mapped by the test: the recovery's view of the array."""

    def __init__(self, path):
        with open(path, "r+b") as f:
            self._mm = mmap.mmap(f.fileno(), 4096)
        self._u64 = np.frombuffer(self._mm, dtype="<u8", count=512)
        self._u32 = np.frombuffer(self._mm, dtype="<u4", count=1024)

    @property
    def sequence(self) -> int:
        return int(self._u64[SEQUENCE // 8])

    @property
    def writer(self) -> int:
        return int(self._u64[WRITER // 8])

    @writer.setter
    def writer(self, word: int):
        self._u64[WRITER // 8] = word

    def cas_writer(self, expected: int, new: int) -> int:
        """A recovery's compare-and-swap of the writer word; returns the word found."""
        return compare_exchange_u64(self._u64.ctypes.data + WRITER, expected, new)

    @property
    def torn(self) -> bool:
        return bool(self._u32[FLAGS // 4] & TORN)

    @property
    def write_count(self) -> int:
        return int(self._u64[WRITE_COUNT // 8])

    def clear_torn(self):
        self._u32[FLAGS // 4] = int(self._u32[FLAGS // 4]) & ~TORN & 0xFFFFFFFF

    def take_over(self, recoverer: int):
        """The recovery of `take_over`, against a writer that is in fact alive and still in
        its block: claims the writer word, moves the sequence from odd s to s + 2, marks TORN,
        gives the word up and publishes s + 3. Returns the published sequence."""
        assert self.sequence & 1 == 1 and self.writer not in (0, recoverer)
        self._u64[WRITER // 8] = recoverer        # the claim (a CAS in Rust)
        return self.finish_take_over(recoverer)

    def finish_take_over(self, recoverer: int):
        """The rest of `take_over`, once the writer word is claimed."""
        s = self.sequence
        assert s & 1 == 1 and self.writer == recoverer
        self._u64[SEQUENCE // 8] = s + 2          # the take-over (a CAS)
        self._u32[FLAGS // 4] |= TORN
        self._u64[WRITER // 8] = 0
        self._u64[SEQUENCE // 8] = s + 3          # publish (a CAS)
        return s + 3


def identity(pid: int) -> int:
    """The writer word of a live process: pid | (start time & 0xFFFFFFFF) << 32 (FORMAT.md).

    The recovery's word is the daemon's (a live process, as a real recovery is), so the
    daemon's own periodic recovery sees a live holder and leaves these arrays alone."""
    with open(f"/proc/{pid}/stat") as f:
        start = int(f.read().rsplit(")", 1)[1].split()[19])
    return pid | (start & 0xFFFFFFFF) << 32


def whole_write_by_another_process(worker, path):
    """A Rust writer replaces the whole u64 array once and clears TORN (a repairing write)."""
    done = subprocess.run([worker, "writer", path, "0"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def start_holder(worker, path):
    """A Rust writer that takes the write side, stores element 0 and stays in its write."""
    p = subprocess.Popen([worker, "hold", path], stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([p.stdout], [], [], 60)
    line = p.stdout.readline() if ready else ""
    if not line.startswith("holding"):
        p.kill()
        p.wait(timeout=30)
        pytest.fail(f"mmshare-test-worker hold did not start: {line!r}")
    return p


def setup(daemon, name):
    c = mmshare.connect(daemon.socket)
    a = c.create(name, "<u8", (4,))  # u64: the Rust worker's writer and hold need it
    with a.write() as v:
        v[:] = 1
    h = Header(a.path)
    assert (h.sequence, h.writer, h.torn, h.write_count) == (2, 0, False, 1)
    return c, a, h


def test_a_taken_over_writer_raises_and_marks_torn_over_a_repairing_write(daemon, worker):
    """The recovery publishes TORN, another writer repairs the whole array (clearing TORN),
    then a late store of the loser lands on that version. The loser must not publish (its
    sequence CAS would move 8 back to 4), must raise, and must leave the array TORN: it takes
    the write side again and publishes TORN, so its late store is not passed off as part of a
    consistent version."""
    c, a, h = setup(daemon, "over")
    recoverer = identity(daemon.proc.pid)
    seen = []
    with pytest.raises(mmshare.LostWriteSide) as lost:
        with a.write(timeout=30) as v:
            seen.append(h.sequence)
            assert h.sequence == 3 and h.writer == process_identity()
            v[0] = 7                                  # stored while the write side is ours
            seen.append(h.take_over(recoverer))       # 6, TORN
            whole_write_by_another_process(worker, a.path)
            seen.append(h.sequence)
            assert seen[-1] == 8 and not h.torn       # repaired
            v[3] = 7                                  # a late store, onto version 4
    assert (lost.value.sequence, lost.value.found) == (3, 8)
    assert "lost the write side before publishing (took sequence 3, found 8)" in str(lost.value)
    assert h.sequence >= max(seen), f"the sequence moved backwards: {seen} then {h.sequence}"
    assert h.sequence == 10      # taken again (8 -> 9) and published TORN
    assert h.torn and h.writer == 0
    assert h.write_count == 2    # the first write and the worker's; the lost one is not counted
    with pytest.raises(mmshare.Torn):
        a.read(timeout=10)
    assert a.read(timeout=10, allow_torn=True)[3] == 7
    c.close()


def test_a_taken_over_writer_does_not_publish_a_third_writers_write(daemon, worker):
    """After the recovery, a third writer (another process) takes the write side and stays in
    its write. The loser's hand-over CASes fail against the third writer's word and sequence:
    it raises, and the third writer's half-done write stays unpublished, its identity word in
    place, the sequence odd and never moved backwards, TORN still set."""
    c, a, h = setup(daemon, "third")
    recoverer = identity(daemon.proc.pid)
    holder = None
    try:
        # The timeout bounds the loser's attempt to take the write side again to mark TORN:
        # the third writer never lets go, so that attempt gives up and the recovery's mark
        # stands.
        with pytest.raises(mmshare.LostWriteSide) as lost:
            with a.write(timeout=1.0) as v:
                v[:] = 9
                h.take_over(recoverer)                # publishes 6, TORN
                holder = start_holder(worker, a.path)
                third_sequence, third_word = h.sequence, h.writer
                assert third_sequence == 7
                assert third_word not in (0, recoverer, process_identity())
        assert (lost.value.sequence, lost.value.found) == (3, 7)
        assert h.sequence == third_sequence, "the loser published (or undid) the third write"
        assert h.writer == third_word, "the loser cleared the third writer's identity"
        assert h.torn
        assert h.write_count == 1
        assert holder.poll() is None  # the third writer is still in its write
    finally:
        if holder is not None:
            holder.kill()
            holder.wait(timeout=30)
    c.close()


def test_a_taken_over_writer_whose_body_raises_propagates_the_body_error(daemon, worker):
    """A loss found while the block's own exception propagates: that exception is the one
    raised (as a Rust write closure's panic keeps unwinding), and the loser still publishes
    nothing of its own: the sequence only moves forwards and the array ends TORN."""
    c, a, h = setup(daemon, "raises")
    recoverer = identity(daemon.proc.pid)
    seen = []
    with pytest.raises(RuntimeError, match="body failed"):
        with a.write(timeout=30) as v:
            v[0] = 5
            seen.append(h.take_over(recoverer))
            whole_write_by_another_process(worker, a.path)
            seen.append(h.sequence)
            v[1] = 5
            raise RuntimeError("body failed")
    assert h.sequence >= max(seen), f"the sequence moved backwards: {seen} then {h.sequence}"
    assert h.sequence == 10 and h.torn and h.writer == 0
    c.close()


def test_the_publish_is_a_compare_and_swap_of_the_sequence(daemon):
    """A take-over that left the loser's writer word in place (a recoverer that does not claim
    it, or one writer identity shared by two holders): the loser's hand-over of the word
    succeeds, and only the publishing CAS of the sequence (s + 1 -> s + 2) stops it from
    moving the sequence back from 6 to 4. It raises, and marks the array TORN again."""
    c, a, h = setup(daemon, "seqcas")
    recoverer = identity(daemon.proc.pid)
    seen = []
    with pytest.raises(mmshare.LostWriteSide) as lost:
        with a.write(timeout=30) as v:
            v[:] = 3
            me = h.writer
            seen.append(h.take_over(recoverer))     # 6, TORN
            h.writer = me                           # the word is the loser's again
            h.clear_torn()                          # and someone cleared TORN meanwhile
    assert (lost.value.sequence, lost.value.found) == (3, 6)
    assert h.sequence >= max(seen), f"the sequence moved backwards: {seen} then {h.sequence}"
    assert h.sequence == 8 and h.torn and h.writer == 0
    c.close()


class Claimant(threading.Thread):
    """The recovery that has claimed the writer word, running beside the writer: after
    `delay` seconds it does `then` (hands the word back, or takes the write side over)."""

    def __init__(self, then, delay=0.2):
        super().__init__(daemon=True)
        self.then, self.delay = then, delay
        self.result = self.error = None

    def run(self):
        try:
            time.sleep(self.delay)
            self.result = self.then()
        except BaseException as e:  # reported by finish()
            self.error = e

    def finish(self):
        self.join(60)
        assert not self.is_alive(), "the claimant thread did not finish"
        assert self.error is None, self.error


@pytest.mark.parametrize("phase", ["recording", "publishing"])
def test_a_claimed_word_handed_back_is_waited_for_and_the_write_succeeds(daemon, phase):
    """A recovery claimed the writer word on a stale look (an ABA: it watched an earlier state,
    the write it meant had published, and the word is the same again) while the sequence is
    still this writer's. Its sequence CAS fails, so it hands the word back exactly as found.
    The writer's CAS on the word (recording itself: 0 -> me; giving it up: me -> 0) fails
    meanwhile; deciding "lost" there would leave the odd sequence held by nobody. The writer
    must wait for the hand-back and then complete its write normally."""
    c, a, h = setup(daemon, f"handback-{phase}")
    recoverer = identity(daemon.proc.pid)
    me = process_identity()
    entered = []
    if phase == "recording":
        # Claimed while the word was 0 (it is 0 whenever the sequence is even).
        assert h.cas_writer(0, recoverer) == 0
        claimant = Claimant(lambda: h.cas_writer(recoverer, 0))
        claimant.start()
    else:
        claimant = None
    try:
        with a.write(timeout=30) as v:
            entered.append(h.sequence)
            v[:] = 9
            if phase == "publishing":
                assert h.cas_writer(me, recoverer) == me       # claimed, found = me
                claimant = Claimant(lambda: h.cas_writer(recoverer, me))
                claimant.start()
    finally:
        if claimant is not None:
            claimant.finish()
    assert entered == [3]
    # The hand-back found the claim still in place: the writer's CAS had not overwritten it.
    assert claimant.result == recoverer
    assert (h.sequence, h.writer, h.torn, h.write_count) == (4, 0, False, 2)
    assert a.read(timeout=10).tolist() == [9, 9, 9, 9]
    c.close()


def test_a_claimed_word_followed_by_a_takeover_raises_without_writing(daemon):
    """The writer's record (CAS 0 -> me) fails against a recovery's claim while the sequence
    is still its own; the recovery then takes the write side over (3 -> 5, TORN, word given
    up, 6). The writer raises `LostWriteSide` reporting the sequence it found moved on (not
    its own: it waited for the sequence to tell), never runs its block, and leaves the
    recovery's state alone."""
    c, a, h = setup(daemon, "claim-takeover")
    recoverer = identity(daemon.proc.pid)
    assert h.cas_writer(0, recoverer) == 0
    claimant = Claimant(lambda: h.finish_take_over(recoverer))
    claimant.start()
    entered = []
    try:
        with pytest.raises(mmshare.LostWriteSide) as lost:
            with a.write(timeout=30) as v:
                entered.append(True)
                v[:] = 9
    finally:
        claimant.finish()
    assert claimant.result == 6
    assert not entered, "the block ran although the write side was lost"
    assert lost.value.sequence == 3
    assert lost.value.found in (5, 6), f"decided before the sequence moved: {lost.value}"
    assert (h.sequence, h.writer, h.torn, h.write_count) == (6, 0, True, 1)
    assert a.array.tolist() == [1, 1, 1, 1]            # nothing written
    with a.write(timeout=30, repair=True) as v:
        v[:] = 2
    assert a.read(timeout=10).tolist() == [2, 2, 2, 2] and h.sequence == 8
    c.close()


def test_a_claimant_that_never_follows_up_is_given_up_on_after_the_timeout(daemon):
    """A recovery claims the word and then does nothing more (it died there). The writer takes
    the sequence (2 -> 3), fails to record itself, waits for a takeover or a hand-back only as
    long as its timeout, then raises `LostWriteSide` before its block runs, storing nothing and
    leaving the sequence (odd) and the claimant's word to the recovery of that claimant."""
    c, a, h = setup(daemon, "claim-stuck")
    recoverer = identity(daemon.proc.pid)
    h.writer = recoverer
    entered = []
    with pytest.raises(mmshare.LostWriteSide) as lost:
        with a.write(timeout=0.5) as v:
            entered.append(True)
            v[:] = 9
    assert not entered, "the block ran although the write side was lost"
    assert (lost.value.sequence, lost.value.found) == (3, 3)
    assert h.sequence == 3 and h.writer == recoverer   # left to the recovery
    assert not h.torn and h.write_count == 1
    assert a.array.tolist() == [1, 1, 1, 1]            # nothing written
    # That claimant's takeover completes (3 -> 5, TORN, word given up, 6); writes work again.
    h.finish_take_over(recoverer)
    assert h.sequence == 6 and h.torn
    with a.write(timeout=30, repair=True) as v:
        v[:] = 2
    assert a.read(timeout=10).tolist() == [2, 2, 2, 2] and h.sequence == 8
    c.close()


def test_lost_write_side_is_an_mmshare_error():
    e = mmshare.LostWriteSide(3, 8)
    assert isinstance(e, mmshare.MmshareError)
    assert (e.sequence, e.found) == (3, 8)
    assert str(e) == ("lost the write side before publishing (took sequence 3, found 8): the "
                      "write was not published and the array is marked torn")
