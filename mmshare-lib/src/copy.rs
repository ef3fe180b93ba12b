//! Copying a frame out of shared memory, right after another CPU wrote it.
//!
//! A frame a subscriber copies out was, a moment ago, written by the publisher on another
//! CPU: its cache lines sit modified in that CPU's private cache, and each one the copy loads
//! is a transfer between the cores. How well a copy overlaps those transfers depends on how
//! it walks the bytes, and the C library's `memcpy` (the copy behind `copy_from_slice`) is not
//! the best one here: on the Xeon this project is benchmarked on (AVX-512, fast short `rep
//! movsb`), a ping-pong between two cores that copies each 4 KiB message out took about
//! 1 620 ns one way with glibc's `memcpy` against 1 480–1 500 ns with the CPU's string move
//! (`rep movsb`), and 2–10 % less from 1 KiB to 64 KiB; below 1 KiB, `memcpy` was as fast or
//! faster. [`copy_fresh`] uses the string move from [`STRING_MOVE_FROM`] bytes on x86-64 and
//! `copy_from_slice` otherwise. The figures come from `bench/peers` (the Python rows, which
//! copy every frame out) and a two-thread C probe, on that one CPU: the threshold is not
//! tuned per CPU model (some older AMD cores are known to move strings slowly; the CPU's
//! `erms` / `fsrm` flags are not checked). The choice is a speed choice only: both copies
//! read and write exactly the same bytes.

/// From this many bytes, [`copy_fresh`] moves them with `rep movsb` on x86-64.
pub(crate) const STRING_MOVE_FROM: usize = 1024;

/// Copies `src` into `dst` (of the same length, else a panic, as `copy_from_slice`), with the
/// copy that measured fastest for bytes another CPU has just written (module docs).
pub(crate) fn copy_fresh(dst: &mut [u8], src: &[u8]) {
    assert_eq!(
        dst.len(),
        src.len(),
        "a copy between slices of different lengths"
    );
    #[cfg(target_arch = "x86_64")]
    if src.len() >= STRING_MOVE_FROM {
        // SAFETY: `rep movsb` copies `rcx` bytes from `rsi` to `rdi`, forwards (the ABI
        // guarantees the direction flag is clear at every call): `src` is readable and `dst`
        // writable for that many bytes (two slices of the same length, and `dst`, being
        // `&mut`, overlaps nothing). It touches no stack and no flags; the registers it moves
        // are declared as clobbered.
        unsafe {
            std::arch::asm!(
                "rep movsb",
                inout("rcx") src.len() => _,
                inout("rsi") src.as_ptr() => _,
                inout("rdi") dst.as_mut_ptr() => _,
                options(nostack, preserves_flags),
            );
        }
        return;
    }
    dst.copy_from_slice(src);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length around the switch and a few far from it, at odd offsets on both sides:
    /// the copy is byte-exact and writes nothing outside `dst`.
    #[test]
    fn copies_exactly_the_bytes_at_every_length_and_offset() {
        let lens = [0, 1, 7, 63, 64, 1023, 1024, 1025, 4096, 4099, 65_537];
        for len in lens {
            for (from, to) in [(0, 0), (1, 3), (5, 0), (0, 7)] {
                // No period: a copy shifted by any whole number of bytes differs.
                let src: Vec<u8> = (0..len + from)
                    .map(|i| ((i ^ (i >> 8) ^ (i >> 16)) * 7 + 3) as u8)
                    .collect();
                let mut dst = vec![0xAA_u8; len + to + 9];
                copy_fresh(&mut dst[to..to + len], &src[from..from + len]);
                assert_eq!(&dst[to..to + len], &src[from..from + len], "len {len}");
                assert!(dst[..to].iter().all(|&b| b == 0xAA), "before, len {len}");
                assert!(
                    dst[to + len..].iter().all(|&b| b == 0xAA),
                    "after, len {len}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "different lengths")]
    fn slices_of_different_lengths_are_refused() {
        copy_fresh(&mut [0; 4], &[1; 5]);
    }
}
