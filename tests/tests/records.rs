//! Record (structured) and time dtypes end to end: `#[derive(Record)]` layouts, array files
//! and streams of records through a real daemon, the layout check at open, and what a file
//! says when its record descr is damaged.

mod common;

use std::os::unix::fs::FileExt;
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use common::Daemon;
use mmshare::units::{Micros, Nanos};
use mmshare::{
    Access, Array, ArraySpec, DType, DateTime64, Delivery, Element, OpenError, Record,
    StreamOptions, TimeDelta64, TimeUnit,
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Record)]
#[repr(C)]
struct Point {
    x: f32,
    y: f32,
    id: u32,
}

/// A detection: nested records, a subarray, a time, explicit padding and a renamed field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Record)]
#[repr(C)]
struct Detection {
    at: Point,
    #[mmshare(padding)]
    _pad: [u8; 4],
    t: DateTime64<Nanos>,
    #[mmshare(rename = "box")]
    bbox: [[f32; 2]; 2],
    score: f64,
}

/// Same size and types as `Point`, other names: a different record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Record)]
#[repr(C)]
struct Renamed {
    a: f32,
    b: f32,
    c: u32,
}

/// Tuple structs name their fields as NumPy does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Record)]
#[repr(C)]
struct Pair(u16, i16);

const DETECTION: &str = "[('at', [('x', '<f4'), ('y', '<f4'), ('id', '<u4')]), ('', '|V4'), \
                         ('t', '<M8[ns]'), ('box', '<f4', (2, 2)), ('score', '<f8')]";

#[test]
fn derived_layouts_are_numpys() {
    assert_eq!(
        Point::dtype().unwrap().descr(),
        "[('x', '<f4'), ('y', '<f4'), ('id', '<u4')]"
    );
    assert_eq!(Detection::dtype().unwrap().descr(), DETECTION);
    assert_eq!(Detection::dtype().unwrap().size(), size_of::<Detection>());
    assert_eq!(
        Pair::dtype().unwrap().descr(),
        "[('f0', '<u2'), ('f1', '<i2')]"
    );
    // What a user types (any spelling) is the same dtype as the struct's.
    assert_eq!(
        DType::parse("[('x','f4'),('y','float32'),('id','u4')]").unwrap(),
        Point::dtype().unwrap()
    );
    assert_eq!(
        DateTime64::<Micros>::dtype().unwrap(),
        DType::DateTime64(TimeUnit::Micros)
    );
    assert_eq!(TimeDelta64::<Nanos>::dtype().unwrap().descr(), "<m8[ns]");
}

fn detection(i: u32) -> Detection {
    Detection {
        at: Point {
            x: i as f32,
            y: -(i as f32),
            id: i,
        },
        _pad: [0; 4],
        t: DateTime64::new(1_700_000_000_000_000_000 + i64::from(i)),
        bbox: [[i as f32, 1.0], [2.0, 3.0]],
        score: f64::from(i) / 10.0,
    }
}

/// An array file of records: written and read as the struct, refused as any other layout
/// (another record of the same size, a number type), and still a plain `RawArray`.
#[test]
fn a_record_array_file_opens_only_as_its_layout() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ArraySpec::new("dets", Detection::dtype().unwrap(), vec![5]);
    let (path, header) = mmshare::create_array_file(dir.path(), &spec).unwrap();
    assert_eq!(header.data_len, 5 * size_of::<Detection>() as u64);
    let writer = Array::<Detection>::open(&path, Access::Write).unwrap();
    let rows: Vec<Detection> = (0..5).map(detection).collect();
    writer.write_all(&rows).unwrap();
    let reader = Array::<Detection>::open(&path, Access::Read).unwrap();
    assert_eq!(reader.read_to_vec().unwrap(), rows);
    assert_eq!(reader.dtype().descr(), DETECTION);

    let err = Array::<Point>::open(&path, Access::Read).unwrap_err();
    assert!(matches!(err, OpenError::DTypeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("('x', '<f4')"), "{err}");
    let err = Array::<u8>::open(&path, Access::Read).unwrap_err();
    assert!(matches!(err, OpenError::DTypeMismatch { .. }), "{err}");

    let points = ArraySpec::new("points", Point::dtype().unwrap(), vec![2]);
    let (path, _) = mmshare::create_array_file(dir.path(), &points).unwrap();
    let err = Array::<Renamed>::open(&path, Access::Read).unwrap_err();
    assert!(
        matches!(&err, OpenError::DTypeMismatch { expected, found }
            if expected.size() == found.size()),
        "{err}"
    );
    assert!(Array::<Point>::open(&path, Access::Read).is_ok());
}

/// Where the record's descr is, and what damage to it does: the header's dtype field says
/// `|V` and the itemsize; the descr is a critical extension record. A descr that disagrees
/// with the itemsize is refused; a file whose extension area is gone altogether is opaque
/// bytes (`|V12`) to a reader, never a record of another layout.
#[test]
fn the_descr_is_an_extension_record_checked_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ArraySpec::new("p", Point::dtype().unwrap(), vec![3]);
    let (path, header) = mmshare::create_array_file(dir.path(), &spec).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut field = [0u8; 16];
    file.read_exact_at(&mut field, mmshare::format::offsets::DTYPE as u64)
        .unwrap();
    assert_eq!(&field[..5], b"|V12\0");
    let records = header.read_extensions(&file).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].tag, mmshare::format::EXTENSION_RECORD_DTYPE);
    assert_eq!(
        std::str::from_utf8(&records[0].value).unwrap(),
        "[('x', '<f4'), ('y', '<f4'), ('id', '<u4')]"
    );

    // Rewrite the area with a descr of another itemsize (CRC and length made consistent):
    // refused, naming both.
    let rewrite = |descr: &str| {
        let (area, crc) = mmshare::format::encode_extensions(&[mmshare::format::Extension {
            tag: mmshare::format::EXTENSION_RECORD_DTYPE,
            value: descr.as_bytes().to_vec(),
        }]);
        let mut h = header.clone();
        h.extension = mmshare::format::ExtensionArea {
            len: area.len() as u32,
            crc,
        };
        file.set_len(h.file_len()).unwrap();
        file.write_all_at(
            &h.encode()[..mmshare::format::offsets::IMMUTABLE_END + 4],
            0,
        )
        .unwrap();
        file.write_all_at(&area, h.extension_offset()).unwrap();
    };
    rewrite("[('x', '<f4'), ('y', '<f8'), ('z', '<f4')]");
    let err = mmshare::RawArray::open(&path, Access::Read).unwrap_err();
    assert!(
        err.to_string().contains("itemsize 12") || err.to_string().contains("|V12"),
        "{err}"
    );
    // Not canonical: two spellings of one layout would make two valid files.
    rewrite("[('x','<f4'),('y','<f4'),('id','<u4')]");
    let err = mmshare::RawArray::open(&path, Access::Read).unwrap_err();
    assert!(err.to_string().contains("canonical"), "{err}");
    rewrite("[('x', '<f4'), ('y', '<f4'), ('id', '<u4')]");
    assert!(Array::<Point>::open(&path, Access::Read).is_ok());

    // No extension area at all: opaque bytes.
    let mut h = header.clone();
    h.extension = mmshare::format::ExtensionArea::default();
    file.write_all_at(
        &h.encode()[..mmshare::format::offsets::IMMUTABLE_END + 4],
        0,
    )
    .unwrap();
    let raw = mmshare::RawArray::open(&path, Access::Read).unwrap();
    assert_eq!(raw.header().dtype, DType::Void(12));
    assert!(Array::<Point>::open(&path, Access::Read).is_err());
}

/// Through a real daemon: a record array created by name, opened by another client as the
/// struct; a record stream published and received as the struct, lossless, every frame; time
/// arrays; and the daemon's refusals of bad records name what is wrong.
#[test]
fn records_and_times_through_the_daemon() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    let dets = client.create_array::<Detection>("dets", &[4]).unwrap();
    let rows: Vec<Detection> = (10..14).map(detection).collect();
    dets.write_all(&rows).unwrap();
    let info = client.stat("dets").unwrap();
    assert_eq!(info.dtype, DETECTION);
    let other = daemon.client();
    let seen = other.open::<Detection>("dets", Access::Read).unwrap();
    assert_eq!(seen.read_to_vec().unwrap(), rows);
    let err = other.open::<Point>("dets", Access::Read).unwrap_err();
    assert!(err.to_string().contains("program asked for"), "{err}");
    // Any spelling of the descr names the same array (exist_ok adopts it).
    let again = client
        .create(
            &mmshare::CreateOptions::new(
                "dets",
                "[('at',[('x','f4'),('y','f4'),('id','u4')]),('','V4'),('t','M8[ns]'),\
                 ('box','f4',(2,2)),('score','f8')]",
                &[4],
            )
            .exist_ok(true),
        )
        .unwrap();
    assert_eq!(again.info().dtype, DETECTION);

    client
        .create_stream(&StreamOptions::new(
            "points",
            Point::dtype().unwrap().descr(),
            &[3],
        ))
        .unwrap();
    let mut publisher = other.publisher::<Point>("points").unwrap();
    let subscriber = client
        .subscribe::<Point>("points", Delivery::Lossless)
        .unwrap();
    for i in 0..20u32 {
        let frame: Vec<Point> = (0..3)
            .map(|k| Point {
                x: i as f32,
                y: k as f32,
                id: i * 3 + k,
            })
            .collect();
        publisher.send(&frame).unwrap();
        let sample = subscriber.receive_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(sample.number(), u64::from(i));
        assert_eq!(&sample[..], &frame[..]);
    }
    assert!(
        client
            .subscribe::<Renamed>("points", Delivery::Lossy)
            .is_err()
    );

    let times = client
        .create_array::<DateTime64<Nanos>>("times", &[2])
        .unwrap();
    times
        .write_all(&[DateTime64::new(5), DateTime64::NAT])
        .unwrap();
    assert_eq!(client.stat("times").unwrap().dtype, "<M8[ns]");
    let back = other
        .open::<DateTime64<Nanos>>("times", Access::Read)
        .unwrap();
    assert!(back.read_to_vec().unwrap()[1].is_nat());
    assert!(
        other
            .open::<DateTime64<Micros>>("times", Access::Read)
            .is_err()
    );

    for (dtype, says) in [
        ("[('a', '<f4'), ('a', '<f4')]", "appears twice"),
        ("[('a', 'O')]", "not supported"),
        ("[('a', '<f4')", "unexpected end"),
        ("M8", "not supported"),
    ] {
        let err = client
            .create(&mmshare::CreateOptions::new("bad", dtype, &[1]))
            .unwrap_err();
        assert_eq!(err.kind(), Some(mmshare::ErrorKind::InvalidDtype), "{err}");
        assert!(err.to_string().contains(says), "{dtype}: {err}");
    }
    // A huge descr is refused by the daemon without harm to it.
    let fields: Vec<String> = (0..2000).map(|i| format!("('f{i}','u1')")).collect();
    let huge = format!("[{}]", fields.join(","));
    let err = client
        .create(&mmshare::CreateOptions::new("huge", huge, &[1]))
        .unwrap_err();
    assert!(err.to_string().contains("at most"), "{err}");
    assert_eq!(client.stat("dets").unwrap().dtype, DETECTION);
}
