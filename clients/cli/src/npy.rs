//! The NumPy `.npy` header: just enough to stream arrays in and out without loading them.
//!
//! Format (numpy.lib.format): magic `\x93NUMPY`, major and minor version bytes, a header length
//! (u16 for version 1.0, u32 for 2.0 and 3.0), then an ASCII Python dict literal
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` padded with spaces and a
//! newline so the data starts at a multiple of 64 bytes. The raw data follows.

use std::io::Read;

use mmshare::DType;

/// What a `.npy` header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: DType,
    /// Fortran (column-major) order.
    pub fortran: bool,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Where the data starts in the file.
    pub data_offset: u64,
}

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Longest header accepted (NumPy itself refuses more than 10 000 bytes by default).
const MAX_HEADER: usize = 1 << 16;

/// Reads and parses the header at the start of `r`.
///
/// # Errors
/// A message naming what is wrong: not a .npy file, an unsupported version, dtype or layout.
pub fn read_header(r: &mut impl Read) -> Result<NpyHeader, String> {
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre)
        .map_err(|_| "not a .npy file (shorter than its magic)".to_string())?;
    if &pre[..6] != MAGIC {
        return Err("not a .npy file (bad magic)".into());
    }
    let (len, prefix) = match pre[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(|e| e.to_string())?;
            (u16::from_le_bytes(b) as usize, 10)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|e| e.to_string())?;
            (u32::from_le_bytes(b) as usize, 12)
        }
        v => return Err(format!("unsupported .npy format version {v}.{}", pre[7])),
    };
    if len > MAX_HEADER {
        return Err(format!(".npy header of {len} bytes is too large"));
    }
    let mut text = vec![0u8; len];
    r.read_exact(&mut text)
        .map_err(|_| ".npy header is truncated".to_string())?;
    let text = String::from_utf8(text).map_err(|_| ".npy header is not text".to_string())?;
    let descr = dict_value(&text, "descr")?;
    // A scalar dtype is a quoted string, a record dtype its list of fields.
    let descr = if descr.starts_with('[') {
        descr.as_str()
    } else {
        descr
            .strip_prefix('\'')
            .and_then(|d| d.strip_suffix('\''))
            .or_else(|| descr.strip_prefix('"').and_then(|d| d.strip_suffix('"')))
            .ok_or_else(|| format!("unsupported .npy dtype {descr}"))?
    };
    let dtype = DType::parse(descr).map_err(|e| e.to_string())?;
    let fortran = match dict_value(&text, "fortran_order")?.as_str() {
        "True" => true,
        "False" => false,
        other => return Err(format!("bad fortran_order {other} in .npy header")),
    };
    let shape_text = dict_value(&text, "shape")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("bad shape {shape_text} in .npy header"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("bad shape {shape_text} in .npy header"))?;
    Ok(NpyHeader {
        dtype,
        fortran,
        shape,
        data_offset: (prefix + len) as u64,
    })
}

/// The value text after `'key':` up to the next top-level `,` or `}`.
fn dict_value(text: &str, key: &str) -> Result<String, String> {
    // NumPy writes single quotes; np.load also takes double-quoted keys.
    let (at, needle_len) = [format!("'{key}':"), format!("\"{key}\":")]
        .iter()
        .find_map(|n| text.find(n.as_str()).map(|i| (i, n.len())))
        .ok_or_else(|| format!(".npy header has no '{key}'"))?;
    let start = at + needle_len;
    let rest = text[start..].trim_start();
    let mut depth = 0i32;
    let mut end = rest.len();
    // Brackets inside quoted text (a record's field names) are not structure.
    let mut quote = None;
    for (i, c) in rest.char_indices() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '(' | '[' | '{' => depth += 1,
            ')' | ']' => depth -= 1,
            '}' if depth == 0 => {
                end = i;
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    Ok(rest[..end].trim().to_owned())
}

/// A version 1.0 (or 2.0 if needed) header for an array, data 64-byte aligned.
pub fn header_bytes(dtype: &DType, fortran: bool, shape: &[u64]) -> Vec<u8> {
    header_bytes_at_least(dtype, fortran, shape, 0)
}

/// [`header_bytes`], padded with spaces to at least `min_len` bytes in all (a multiple of 64):
/// a header written before a stream of unknown length is rewritten in place once the length
/// is known, in the same number of bytes.
pub fn header_bytes_at_least(
    dtype: &DType,
    fortran: bool,
    shape: &[u64],
    min_len: usize,
) -> Vec<u8> {
    let shape_text = match shape {
        [] => "()".to_string(),
        [one] => format!("({one},)"),
        many => format!(
            "({})",
            many.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let descr = match dtype {
        DType::Record(r) => r.descr().to_owned(),
        other => format!("'{other}'"),
    };
    let dict = format!(
        "{{'descr': {descr}, 'fortran_order': {}, 'shape': {shape_text}, }}",
        if fortran { "True" } else { "False" }
    );
    let build = |prefix: usize| {
        let unpadded = prefix + dict.len() + 1;
        let pad = (64 - unpadded % 64) % 64
            + min_len.saturating_sub(unpadded + (64 - unpadded % 64) % 64);
        let mut text = dict.clone().into_bytes();
        text.extend(std::iter::repeat_n(b' ', pad));
        text.push(b'\n');
        text
    };
    let text = build(10);
    let mut out = MAGIC.to_vec();
    if text.len() <= u16::MAX as usize {
        out.extend([1, 0]);
        out.extend((text.len() as u16).to_le_bytes());
        out.extend(text);
    } else {
        let text = build(12);
        out.extend([2, 0]);
        out.extend((text.len() as u32).to_le_bytes());
        out.extend(text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_align_the_data() {
        for (dtype, fortran, shape) in [
            (DType::F32, false, vec![2, 3]),
            (DType::U8, true, vec![7]),
            (DType::Complex128, false, vec![]),
            (DType::Bool, false, vec![0, 4]),
        ] {
            let bytes = header_bytes(&dtype, fortran, &shape);
            assert_eq!(bytes.len() % 64, 0);
            let h = read_header(&mut &bytes[..]).unwrap();
            assert_eq!(
                (h.dtype, h.fortran, h.shape, h.data_offset),
                (dtype, fortran, shape, bytes.len() as u64)
            );
        }
    }

    #[test]
    fn numpy_written_header_parses() {
        let text = "{'descr': '<i8', 'fortran_order': False, 'shape': (3, 4), }";
        let mut file = b"\x93NUMPY\x01\x00".to_vec();
        let padded = format!("{text:<117}\n");
        file.extend((padded.len() as u16).to_le_bytes());
        file.extend(padded.as_bytes());
        let h = read_header(&mut &file[..]).unwrap();
        assert_eq!(
            (h.dtype, h.shape, h.data_offset),
            (DType::I64, vec![3, 4], 128)
        );
    }

    #[test]
    fn unsupported_files_are_refused_by_name() {
        assert!(
            read_header(&mut &b"hello world"[..])
                .unwrap_err()
                .contains("not a .npy")
        );
        let text = "{'descr': '>f4', 'fortran_order': False, 'shape': (3,), }\n";
        let mut file = b"\x93NUMPY\x01\x00".to_vec();
        file.extend((text.len() as u16).to_le_bytes());
        file.extend(text.as_bytes());
        assert!(read_header(&mut &file[..]).unwrap_err().contains(">f4"));
        let npy = |text: &str| {
            let mut file = b"\x93NUMPY\x01\x00".to_vec();
            file.extend((text.len() as u16).to_le_bytes());
            file.extend(text.as_bytes());
            file
        };
        // Records are read (their descr is the dtype); fields NumPy's descr cannot give
        // mmshare (objects, strings) are refused by name.
        let file = npy(
            "{'descr': [('a', '<f4'), ('', '|V4')], 'fortran_order': False, 'shape': (3,), }\n",
        );
        let h = read_header(&mut &file[..]).unwrap();
        assert_eq!(h.dtype.descr(), "[('a', '<f4'), ('', '|V4')]");
        assert_eq!(h.dtype.size(), 8);
        // Brackets and commas in field names are names, not structure.
        let file =
            npy("{'descr': [('a (x, y]', '<f4')], 'fortran_order': False, 'shape': (3,), }\n");
        let h = read_header(&mut &file[..]).unwrap();
        assert_eq!(
            (h.dtype.descr().as_ref(), h.shape.as_slice()),
            ("[('a (x, y]', '<f4')]", &[3][..])
        );
        let file = npy("{'descr': [('a', 'O')], 'fortran_order': False, 'shape': (3,), }\n");
        let err = read_header(&mut &file[..]).unwrap_err();
        assert!(err.contains("'O'") || err.contains("\"O\""), "{err}");
    }
}
