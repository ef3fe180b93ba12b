//! Shapes, memory order, and the byte size they imply (checked, never wrapping).

use std::fmt;
use std::str::FromStr;

use crate::dtype::DType;

/// Most dimensions an array may have (NumPy's limit was 32 for a long time; the header has room
/// for exactly this many).
pub const MAX_NDIM: usize = 32;

/// Largest size of a whole array file in bytes: 2^63 − 1, so every size and offset fits in an
/// `i64` (`off_t`, what `lseek`, `fallocate` and NumPy's offsets use).
pub const MAX_FILE_LEN: u64 = i64::MAX as u64;

/// Largest data length in bytes: 2^63 − 4104 = 9223372036854771704, the most whose file (the
/// 4096-byte header page plus the data padded to a multiple of 8) fits in 2^63 − 1 bytes.
/// (The file format depends on shapes, not the reverse: `format` checks at compile time that
/// this agrees with its header size.)
pub const MAX_DATA_LEN: u64 = (MAX_FILE_LEN - 4096) & !7;

/// Memory order of a multi-dimensional array.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Order {
    /// Row-major: the last index varies fastest (NumPy's default).
    #[default]
    C,
    /// Column-major: the first index varies fastest.
    F,
}

impl Order {
    /// The value stored in the header: 0 for C, 1 for Fortran.
    pub const fn code(self) -> u32 {
        match self {
            Order::C => 0,
            Order::F => 1,
        }
    }

    /// The order for a header code, if it is one.
    pub const fn from_code(code: u32) -> Option<Order> {
        match code {
            0 => Some(Order::C),
            1 => Some(Order::F),
            _ => None,
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Order::C => "C",
            Order::F => "F",
        })
    }
}

impl FromStr for Order {
    type Err = ShapeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "C" | "c" => Ok(Order::C),
            "F" | "f" | "Fortran" => Ok(Order::F),
            _ => Err(ShapeError::BadOrder(s.to_owned())),
        }
    }
}

/// A shape that cannot describe an array.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShapeError {
    /// More than [`MAX_NDIM`] dimensions.
    #[error("shape has {ndim} dimensions; at most {MAX_NDIM} are allowed")]
    TooManyDims {
        /// How many dimensions were given.
        ndim: usize,
    },
    /// The byte size exceeds [`MAX_DATA_LEN`] (or overflows 64 bits).
    #[error(
        "shape {shape:?} of {dtype} elements is too large: the data may be at most {MAX_DATA_LEN} bytes (2^63 - 4104), so that the whole file (4096-byte header + data padded to 8 bytes) fits in 2^63 - 1 bytes"
    )]
    Overflow {
        /// The shape as given.
        shape: Vec<u64>,
        /// The element type.
        dtype: DType,
    },
    /// An order other than C or F.
    #[error("unknown order {0:?} (expected C or F)")]
    BadOrder(String),
}

/// Number of elements in `shape` (1 for a 0-d array), or `None` on overflow.
pub fn element_count(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// Byte length of an array of `dtype` with `shape`, checked.
///
/// # Errors
/// [`ShapeError::TooManyDims`] beyond [`MAX_NDIM`]; [`ShapeError::Overflow`] when the size
/// exceeds [`MAX_DATA_LEN`] (the file, header and padding included, must fit in 2^63 − 1 bytes).
///
/// # Example
/// ```
/// use mmshare::{data_len, DType};
/// assert_eq!(data_len(&DType::F32, &[1080, 1920, 3])?, 1080 * 1920 * 3 * 4);
/// assert_eq!(data_len(&DType::F64, &[])?, 8); // a 0-d array holds one element
/// assert_eq!(data_len(&DType::F64, &[0, 5])?, 0);
/// assert!(data_len(&DType::U8, &[1 << 32, 1 << 32]).is_err());
/// # Ok::<(), mmshare::ShapeError>(())
/// ```
pub fn data_len(dtype: &DType, shape: &[u64]) -> Result<u64, ShapeError> {
    if shape.len() > MAX_NDIM {
        return Err(ShapeError::TooManyDims { ndim: shape.len() });
    }
    let overflow = || ShapeError::Overflow {
        shape: shape.to_vec(),
        dtype: dtype.clone(),
    };
    // A zero dimension makes the array empty, whatever the others are; NumPy agrees.
    if shape.contains(&0) {
        return Ok(0);
    }
    let count = element_count(shape).ok_or_else(overflow)?;
    let len = count
        .checked_mul(dtype.size() as u64)
        .ok_or_else(overflow)?;
    if len > MAX_DATA_LEN {
        return Err(overflow());
    }
    Ok(len)
}

/// Parses a shape written as `1080,1920,3` (also `1080x1920x3`, `(1080, 1920, 3)`, `[]`, ``).
///
/// # Errors
/// A message naming the input when a dimension is not a non-negative integer.
pub fn parse_shape(input: &str) -> Result<Vec<u64>, String> {
    let trimmed = input
        .trim()
        .trim_start_matches(['(', '['])
        .trim_end_matches([')', ']']);
    if trimmed.trim().is_empty() {
        return Ok(Vec::new());
    }
    trimmed
        .split([',', 'x'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u64>().map_err(|_| {
                format!("bad shape {input:?}: {s:?} is not a non-negative integer dimension")
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_names_the_shape() {
        let err = data_len(&DType::U8, &[1 << 32, 1 << 32]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "shape [4294967296, 4294967296] of |u1 elements is too large: the data may be at most 9223372036854771704 bytes (2^63 - 4104), so that the whole file (4096-byte header + data padded to 8 bytes) fits in 2^63 - 1 bytes"
        );
        assert!(data_len(&DType::F64, &[1 << 61]).is_err());
        assert!(data_len(&DType::U8, &[u64::MAX, 0]).is_ok());
    }

    /// The limit counts the header page and the padding: the largest accepted array still has
    /// a file size that fits in an `i64` (`fallocate` refused bigger ones with EINVAL).
    #[test]
    fn the_size_limit_counts_header_and_padding() {
        assert_eq!(MAX_DATA_LEN, (1 << 63) - 4104);
        let largest = data_len(&DType::U8, &[MAX_DATA_LEN]).unwrap();
        let file_len = 4096 + largest.div_ceil(8) * 8;
        assert!(file_len <= i64::MAX as u64, "{file_len}");
        for too_big in [MAX_DATA_LEN + 1, (1 << 63) - 4096, (1 << 63) - 1, 1 << 63] {
            let e = data_len(&DType::U8, &[too_big]).unwrap_err();
            assert!(e.to_string().contains("9223372036854771704"), "{e}");
        }
        assert!(data_len(&DType::U16, &[MAX_DATA_LEN / 2]).is_ok());
        assert!(data_len(&DType::U16, &[MAX_DATA_LEN / 2 + 1]).is_err());
    }

    #[test]
    fn at_most_32_dimensions() {
        assert!(data_len(&DType::U8, &[1; 32]).is_ok());
        assert_eq!(
            data_len(&DType::U8, &[1; 33]),
            Err(ShapeError::TooManyDims { ndim: 33 })
        );
    }

    #[test]
    fn shapes_parse_in_the_usual_spellings() {
        assert_eq!(parse_shape("1080,1920,3"), Ok(vec![1080, 1920, 3]));
        assert_eq!(parse_shape("(2, 3)"), Ok(vec![2, 3]));
        assert_eq!(parse_shape("4x4"), Ok(vec![4, 4]));
        assert_eq!(parse_shape("[]"), Ok(vec![]));
        assert_eq!(parse_shape("7"), Ok(vec![7]));
        assert!(parse_shape("3,-1").unwrap_err().contains("-1"));
    }
}
