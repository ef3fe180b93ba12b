//! Property tests of the v1 header: every valid header round-trips, and no byte string, however
//! mangled, makes the decoder panic or accept a header that disagrees with itself.

use mmshare::data_len;
use mmshare::format::{HEADER_SIZE, Header, offsets};
use mmshare::internal::ALL_DTYPES;
use mmshare::{ArraySpec, FormatError, Order};
use proptest::prelude::*;

fn spec_strategy() -> impl Strategy<Value = ArraySpec> {
    (
        "[A-Za-z0-9_-][A-Za-z0-9_.-]{0,40}",
        prop::sample::select(ALL_DTYPES.to_vec()),
        prop::collection::vec(0u64..6, 0..=32),
        any::<bool>(),
        any::<u32>(),
        any::<u32>(),
        0u32..=0o777,
    )
        .prop_filter("not a reserved name", |(n, ..)| !n.ends_with(".corrupt"))
        .prop_map(|(name, dtype, shape, fortran, uid, gid, mode)| ArraySpec {
            name,
            dtype,
            shape,
            order: if fortran { Order::F } else { Order::C },
            owner_uid: uid,
            owner_gid: gid,
            mode,
            stripes: 1,
            sparse: false,
        })
}

proptest! {
    /// Any valid spec encodes to a page that decodes to the same header.
    #[test]
    fn valid_headers_round_trip(spec in spec_strategy()) {
        let h = Header::new(&spec).unwrap();
        let page = h.encode();
        prop_assert_eq!(page.len(), HEADER_SIZE);
        prop_assert_eq!(Header::decode(&page[..]).unwrap(), h);
    }

    /// Flipping any byte before the mutable part is caught (CRC, a field or reserved-zero check);
    /// flipping a byte of the mutable part never matters to the header.
    #[test]
    fn any_flipped_byte_is_caught_or_harmless(spec in spec_strategy(), at in 0usize..HEADER_SIZE, bit in 0u8..8) {
        let h = Header::new(&spec).unwrap();
        let mut page = h.encode();
        page[at] ^= 1 << bit;
        let decoded = Header::decode(&page[..]);
        if at < offsets::SEQUENCE {
            prop_assert!(decoded.is_err(), "flip at {at:#x} accepted");
        } else {
            prop_assert_eq!(decoded.unwrap(), h);
        }
    }

    /// Arbitrary bytes (with a valid magic, version and CRC, so the field checks are reached)
    /// never panic the decoder, and whatever it accepts is self-consistent.
    #[test]
    fn arbitrary_sealed_pages_never_panic(mut body in prop::collection::vec(any::<u8>(), HEADER_SIZE)) {
        body[..8].copy_from_slice(b"MMSHARE\0");
        body[8..12].copy_from_slice(&1u32.to_le_bytes());
        body[12..16].copy_from_slice(&(offsets::IMMUTABLE_END as u32).to_le_bytes());
        let crc = crc32(&body[..offsets::IMMUTABLE_END]);
        body[offsets::CRC..offsets::CRC + 4].copy_from_slice(&crc.to_le_bytes());
        if let Ok(h) = Header::decode(&body) {
            prop_assert_eq!(data_len(&h.dtype, &h.shape).unwrap(), h.data_len);
        }
    }

    /// Short inputs are "need more bytes", never a panic or another error.
    #[test]
    fn short_pages_are_truncated(len in 0usize..HEADER_SIZE) {
        let page = vec![0u8; len];
        prop_assert_eq!(Header::decode(&page), Err(FormatError::Truncated { len: len as u64 }));
    }
}

/// CRC32 (IEEE), written out here so the test does not trust the code under test's choice.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A file written by a newer mmshare, as this build meets it: with an extension area after
/// the data and an unknown read-only-compatible feature it opens for reading (the extension
/// area read and checked) and is refused for writing; with an unknown incompatible feature it
/// is refused outright; a damaged extension area is refused with its own error.
#[test]
fn files_of_a_newer_version_open_as_far_as_their_features_allow() {
    use mmshare::format::{Extension, ExtensionArea, encode_extensions};
    use mmshare::{Access, DType, OpenError, RawArray, create_array_file};
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let (path, mut header) =
        create_array_file(dir.path(), &ArraySpec::new("newer", DType::U8, vec![16])).unwrap();
    let (area, crc) = encode_extensions(&[Extension {
        tag: 3,
        value: b"skip me".to_vec(),
    }]);
    header.extension = ExtensionArea {
        len: area.len() as u32,
        crc,
    };
    header.features.ro_compat = 1 << 20;
    let write = |h: &Header, area: &[u8]| {
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&h.encode()[..], 0).unwrap();
        f.set_len(h.file_len()).unwrap();
        f.write_all_at(area, h.extension_offset()).unwrap();
    };
    write(&header, &area);
    let reader = RawArray::open(&path, Access::Read).unwrap();
    assert_eq!(reader.header().features.ro_compat, 1 << 20);
    let refused = RawArray::open(&path, Access::Write).unwrap_err();
    assert!(
        matches!(
            &refused,
            OpenError::Format {
                source: FormatError::ReadOnlyFeatures { unknown: 0x10_0000 },
                ..
            }
        ),
        "{refused}"
    );
    let mut damaged = area.clone();
    damaged[5] ^= 1;
    write(&header, &damaged);
    assert!(matches!(
        RawArray::open(&path, Access::Read),
        Err(OpenError::Format {
            source: FormatError::BadExtensions(_),
            ..
        })
    ));
    header.features.incompat = 1 << 20;
    write(&header, &area);
    let e = RawArray::open(&path, Access::Read).unwrap_err();
    assert!(e.to_string().contains("newer mmshare"), "{e}");
}
