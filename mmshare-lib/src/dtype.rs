//! Element types, named the way NumPy names them.
//!
//! A [`DType`] is stored in the file header as its NumPy array-protocol descriptor (`<f4`, `|u1`,
//! `<c16`, ...), so any language that knows NumPy's spelling can read it. Parsing also accepts
//! the usual aliases (`f4`, `float32`, `uint8`, `bool`, ...). Everything is little-endian: the
//! data is native-endian on the little-endian machines mmshare supports, and big-endian, object,
//! string and structured dtypes are refused by name.
//!
//! [`Element`] ties a Rust type to its `DType` so typed handles can check, at open time, that the
//! array holds what the program expects.

use std::fmt;
use std::str::FromStr;

use bytemuck::{Pod, Zeroable};

/// The element type of an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// NumPy `bool` (`|b1`): one byte, 0 is false, anything else is true.
    Bool,
    /// `|i1`
    I8,
    /// `<i2`
    I16,
    /// `<i4`
    I32,
    /// `<i8`
    I64,
    /// `|u1`
    U8,
    /// `<u2`
    U16,
    /// `<u4`
    U32,
    /// `<u8`
    U64,
    /// `<f2`, IEEE 754 half precision.
    F16,
    /// `<f4`
    F32,
    /// `<f8`
    F64,
    /// `<c8`: two `f32`, real part first.
    Complex64,
    /// `<c16`: two `f64`, real part first.
    Complex128,
}

/// Every dtype, in a fixed order (useful for tests and for listing).
pub const ALL_DTYPES: [DType; 14] = [
    DType::Bool,
    DType::I8,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::U8,
    DType::U16,
    DType::U32,
    DType::U64,
    DType::F16,
    DType::F32,
    DType::F64,
    DType::Complex64,
    DType::Complex128,
];

/// A dtype string that mmshare does not accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DTypeError {
    /// Not a dtype name mmshare knows.
    #[error("unknown dtype {0:?} (expected a NumPy name such as '<f4', 'f4', 'float32', 'u1')")]
    Unknown(String),
    /// A big-endian descriptor.
    #[error("big-endian dtype {0:?} is not supported: mmshare stores little-endian data")]
    BigEndian(String),
    /// Object, string, datetime, void, long double or structured dtypes.
    #[error(
        "dtype {0:?} is not supported: elements must be bool, 1- to 8-byte integers, float16/32/64 or complex64/128"
    )]
    Unsupported(String),
}

impl DType {
    /// The canonical NumPy descriptor, as stored in the header (`<f4`, `|u1`, ...).
    pub const fn descr(self) -> &'static str {
        match self {
            DType::Bool => "|b1",
            DType::I8 => "|i1",
            DType::I16 => "<i2",
            DType::I32 => "<i4",
            DType::I64 => "<i8",
            DType::U8 => "|u1",
            DType::U16 => "<u2",
            DType::U32 => "<u4",
            DType::U64 => "<u8",
            DType::F16 => "<f2",
            DType::F32 => "<f4",
            DType::F64 => "<f8",
            DType::Complex64 => "<c8",
            DType::Complex128 => "<c16",
        }
    }

    /// Size of one element in bytes (a power of two from 1 to 16).
    pub const fn size(self) -> usize {
        match self {
            DType::Bool | DType::I8 | DType::U8 => 1,
            DType::I16 | DType::U16 | DType::F16 => 2,
            DType::I32 | DType::U32 | DType::F32 => 4,
            DType::I64 | DType::U64 | DType::F64 | DType::Complex64 => 8,
            DType::Complex128 => 16,
        }
    }

    /// The NumPy type name (`float32`, `uint8`, ...), for messages and the CLI.
    pub const fn numpy_name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::F16 => "float16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::Complex64 => "complex64",
            DType::Complex128 => "complex128",
        }
    }

    /// Parses a dtype string exactly the way `np.dtype()` does on little-endian x86-64 Linux
    /// (NumPy 2), for the supported types.
    ///
    /// Accepted: a type code (`f`, `d`, `?`, `B`, `l`, `p`, ...) or a kind and size (`f4`,
    /// `u1`, `c16`, ...), optionally after one byte-order character `<`, `=` or `|` (and `>`
    /// on one-byte types, where byte order means nothing); or a type name (`float32`, `int`,
    /// `double`, `ubyte`, `longlong`, ...) with no prefix. Nothing else: no whitespace, case
    /// matters, and names NumPy 2 removed (`float_`, `int0`, `bool8`, ...) are refused.
    /// docs/FORMAT.md tables every accepted spelling; tests check that table against this
    /// function and against NumPy itself.
    ///
    /// # Errors
    /// [`DTypeError`] naming the input when it is unknown, big-endian, or not a plain numeric
    /// type.
    ///
    /// # Example
    /// ```
    /// use mmshare::DType;
    /// assert_eq!(DType::parse("float32")?, DType::F32);
    /// assert_eq!(DType::parse("<f4")?, DType::F32);
    /// assert_eq!(DType::parse("int")?, DType::I64);
    /// assert_eq!(DType::parse(">u1")?, DType::U8);
    /// assert!(DType::parse(">f4").is_err());
    /// assert!(DType::parse("<f4 ").is_err());
    /// # Ok::<(), mmshare::DTypeError>(())
    /// ```
    pub fn parse(input: &str) -> Result<DType, DTypeError> {
        if let Some(&(_, dtype)) = DTYPE_NAMES.iter().find(|(n, _)| *n == input) {
            return Ok(dtype);
        }
        let (prefix, code) = match input.as_bytes().first() {
            Some(b'<' | b'>' | b'=' | b'|' | b'!') => input.split_at(1),
            _ => ("", input),
        };
        match DTYPE_CODES.iter().find(|(c, _)| *c == code) {
            Some(&(_, dtype)) if prefix != ">" && prefix != "!" => Ok(dtype),
            // Byte order means nothing for one byte: NumPy maps `>u1` to `|u1`.
            Some(&(_, dtype)) if prefix == ">" && dtype.size() == 1 => Ok(dtype),
            Some(_) => Err(DTypeError::BigEndian(input.to_owned())),
            None => Err(unsupported_or_unknown(input, code)),
        }
    }
}

/// Type names `np.dtype()` accepts for the supported types (NumPy 2, x86-64 Linux, where C
/// `long` and `intp` are 64 bits). They take no byte-order prefix.
const DTYPE_NAMES: &[(&str, DType)] = &[
    ("bool", DType::Bool),
    ("bool_", DType::Bool),
    ("byte", DType::I8),
    ("int8", DType::I8),
    ("ubyte", DType::U8),
    ("uint8", DType::U8),
    ("int16", DType::I16),
    ("short", DType::I16),
    ("uint16", DType::U16),
    ("ushort", DType::U16),
    ("int32", DType::I32),
    ("intc", DType::I32),
    ("uint32", DType::U32),
    ("uintc", DType::U32),
    ("int", DType::I64),
    ("int64", DType::I64),
    ("int_", DType::I64),
    ("intp", DType::I64),
    ("long", DType::I64),
    ("longlong", DType::I64),
    ("uint", DType::U64),
    ("uint64", DType::U64),
    ("uintp", DType::U64),
    ("ulong", DType::U64),
    ("ulonglong", DType::U64),
    ("float16", DType::F16),
    ("half", DType::F16),
    ("float32", DType::F32),
    ("single", DType::F32),
    ("double", DType::F64),
    ("float", DType::F64),
    ("float64", DType::F64),
    ("complex64", DType::Complex64),
    ("csingle", DType::Complex64),
    ("cdouble", DType::Complex128),
    ("complex", DType::Complex128),
    ("complex128", DType::Complex128),
];

/// Type codes and kind+size codes; they may follow one byte-order character (`<`, `=`, `|`;
/// `>` only for one-byte types).
const DTYPE_CODES: &[(&str, DType)] = &[
    ("?", DType::Bool),
    ("b1", DType::Bool),
    ("b", DType::I8),
    ("i1", DType::I8),
    ("B", DType::U8),
    ("u1", DType::U8),
    ("h", DType::I16),
    ("i2", DType::I16),
    ("H", DType::U16),
    ("u2", DType::U16),
    ("i", DType::I32),
    ("i4", DType::I32),
    ("I", DType::U32),
    ("u4", DType::U32),
    ("i8", DType::I64),
    ("l", DType::I64),
    ("n", DType::I64),
    ("p", DType::I64),
    ("q", DType::I64),
    ("L", DType::U64),
    ("N", DType::U64),
    ("P", DType::U64),
    ("Q", DType::U64),
    ("u8", DType::U64),
    ("e", DType::F16),
    ("f2", DType::F16),
    ("f", DType::F32),
    ("f4", DType::F32),
    ("d", DType::F64),
    ("f8", DType::F64),
    ("F", DType::Complex64),
    ("c8", DType::Complex64),
    ("D", DType::Complex128),
    ("c16", DType::Complex128),
];

fn unsupported_or_unknown(input: &str, body: &str) -> DTypeError {
    let kind = body.chars().next();
    let known_unsupported = matches!(kind, Some('O' | 'S' | 'U' | 'V' | 'M' | 'm' | 'a'))
        || body.starts_with('(')
        || body.starts_with('[')
        || body.starts_with('{')
        || body.contains(',')
        || matches!(
            body,
            "object"
                | "str"
                | "bytes"
                | "void"
                | "datetime64"
                | "timedelta64"
                | "c"
                | "g"
                | "G"
                | "f16"
                | "c32"
                | "longdouble"
                | "clongdouble"
                | "float128"
                | "complex256"
        );
    if known_unsupported {
        DTypeError::Unsupported(input.to_owned())
    } else {
        DTypeError::Unknown(input.to_owned())
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.descr())
    }
}

impl FromStr for DType {
    type Err = DTypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DType::parse(s)
    }
}

/// A NumPy `bool` element: one byte that another process may set to any value.
///
/// Rust's `bool` must be 0 or 1, but a byte written by another program can be anything, so
/// mmshare never hands out `bool` over shared bytes. `Bool8` holds the raw byte; [`Bool8::get`]
/// reads it the way NumPy does (non-zero is true).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
#[repr(transparent)]
pub struct Bool8(pub u8);

impl Bool8 {
    /// True unless the byte is zero.
    pub const fn get(self) -> bool {
        self.0 != 0
    }
}

impl From<bool> for Bool8 {
    fn from(b: bool) -> Self {
        Bool8(u8::from(b))
    }
}

/// A Rust type that can be an array element.
///
/// Implemented for the integer and float primitives, [`half::f16`], [`Bool8`] and
/// [`num_complex::Complex`] of `f32`/`f64`, and for nothing else: the trait is *sealed*.
/// Typed handles index the mapping by `size_of::<T>()` and trust `T::DTYPE` to describe the
/// bytes, so a foreign implementation with a wrong size would reach past the mapping from safe
/// code. Every implementor is [`Pod`] (any bit pattern is a valid value, which is what makes
/// reading bytes another process wrote sound) and has exactly its dtype's size. Typed handles
/// re-check the size and alignment when they open an array, so even a mistake here is an error,
/// not an out-of-bounds access.
///
/// Code outside this crate cannot implement it:
///
/// ```compile_fail
/// #[derive(Clone, Copy, bytemuck::Zeroable, bytemuck::Pod)]
/// #[repr(transparent)]
/// struct Big([u64; 512]);
/// impl mmshare::Element for Big {
///     const DTYPE: mmshare::DType = mmshare::DType::U8;
/// }
/// ```
///
/// (The same type without the `impl` compiles, so the seal is what refuses it:)
///
/// ```
/// #[derive(Clone, Copy, bytemuck::Zeroable, bytemuck::Pod)]
/// #[repr(transparent)]
/// struct Big([u64; 512]);
/// assert_eq!(bytemuck::bytes_of(&Big([0; 512])).len(), 4096);
/// ```
pub trait Element: sealed::Sealed + Pod + Send + Sync + 'static {
    /// The dtype an array must have to be opened with this element type.
    const DTYPE: DType;
}

/// The seal: a public trait in a private module, so no other crate can name it.
pub(crate) mod sealed {
    /// Implemented exactly for the types the `element!` list below names.
    pub trait Sealed {}
}

macro_rules! element {
    ($($t:ty => $d:ident),* $(,)?) => {
        $(
            impl sealed::Sealed for $t {}
            impl Element for $t { const DTYPE: DType = DType::$d; }
        )*
    };
}

element! {
    Bool8 => Bool,
    i8 => I8, i16 => I16, i32 => I32, i64 => I64,
    u8 => U8, u16 => U16, u32 => U32, u64 => U64,
    half::f16 => F16, f32 => F32, f64 => F64,
    num_complex::Complex<f32> => Complex64,
    num_complex::Complex<f64> => Complex128,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_descr_parses_back_to_itself() {
        for d in ALL_DTYPES {
            assert_eq!(DType::parse(d.descr()), Ok(d));
            assert_eq!(DType::parse(d.numpy_name()), Ok(d));
        }
    }

    #[test]
    fn element_sizes_match_dtype_sizes() {
        fn check<T: Element>() {
            assert_eq!(size_of::<T>(), T::DTYPE.size(), "{}", T::DTYPE);
        }
        check::<Bool8>();
        check::<i8>();
        check::<i16>();
        check::<i32>();
        check::<i64>();
        check::<u8>();
        check::<u16>();
        check::<u32>();
        check::<u64>();
        check::<half::f16>();
        check::<f32>();
        check::<f64>();
        check::<num_complex::Complex<f32>>();
        check::<num_complex::Complex<f64>>();
    }

    #[test]
    fn aliases_are_accepted() {
        assert_eq!(DType::parse("f4"), Ok(DType::F32));
        assert_eq!(DType::parse("u1"), Ok(DType::U8));
        assert_eq!(DType::parse("int64"), Ok(DType::I64));
        assert_eq!(DType::parse("bool"), Ok(DType::Bool));
        assert_eq!(DType::parse("=f8"), Ok(DType::F64));
        assert_eq!(DType::parse("<c16"), Ok(DType::Complex128));
        // Spellings NumPy accepts that were refused before.
        assert_eq!(DType::parse("int"), Ok(DType::I64));
        assert_eq!(DType::parse("byte"), Ok(DType::I8));
        assert_eq!(DType::parse("ubyte"), Ok(DType::U8));
        assert_eq!(DType::parse("longlong"), Ok(DType::I64));
        assert_eq!(DType::parse("p"), Ok(DType::I64));
        assert_eq!(DType::parse("P"), Ok(DType::U64));
        assert_eq!(DType::parse("|f4"), Ok(DType::F32));
        assert_eq!(DType::parse(">u1"), Ok(DType::U8));
    }

    /// The accepted spellings of docs/FORMAT.md ("dtype strings"), as (spelling, descr).
    fn format_md_table() -> Vec<(String, String)> {
        let doc = include_str!("../../docs/FORMAT.md");
        let section = doc
            .split("\n## dtype strings\n")
            .nth(1)
            .expect("FORMAT.md has a '## dtype strings' section")
            .split("\n## ")
            .next()
            .unwrap();
        let mut rows = Vec::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let line = line.replace("\\|", "\u{1}");
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let ticks = |cell: &str| -> Vec<String> {
                cell.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(|t| t.replace('\u{1}', "|"))
                    .collect()
            };
            let descr = ticks(cells[1]).remove(0);
            for spelling in ticks(cells[3]) {
                rows.push((spelling, descr.clone()));
            }
        }
        rows
    }

    /// `DType::parse` accepts exactly the spellings FORMAT.md tables (which
    /// tests/python/test_format_numpy.py checks against `np.dtype()`), each as its descr.
    #[test]
    fn parse_accepts_exactly_the_format_md_table() {
        let table = format_md_table();
        assert_eq!(table.len(), 179, "spellings in the table");
        for (spelling, descr) in &table {
            match DType::parse(spelling) {
                Ok(d) => assert_eq!(d.descr(), descr, "{spelling:?}"),
                Err(e) => panic!("{spelling:?} in the table is refused: {e}"),
            }
        }
        let listed: std::collections::HashSet<&str> =
            table.iter().map(|(s, _)| s.as_str()).collect();
        let mut bodies: Vec<String> = table
            .iter()
            .map(|(s, _)| s.trim_start_matches(['<', '>', '=', '|']).to_owned())
            .collect();
        for kind in "?bBhHiIlLqQnNpPeEfFdDgGcCbiufcSUVOMmaxyz".chars() {
            bodies.push(kind.to_string());
            for size in 0..=32 {
                bodies.push(format!("{kind}{size}"));
            }
        }
        for name in [
            "float_",
            "complex_",
            "int0",
            "uint0",
            "bool8",
            "cfloat",
            "singlecomplex",
        ] {
            bodies.push(name.to_owned());
        }
        let mut tried = 0;
        for body in &bodies {
            for candidate in [body.clone(), body.to_uppercase(), body.to_lowercase()] {
                for prefix in ["", "<", ">", "=", "|", "!", " "] {
                    for suffix in ["", " ", "\n", "\0"] {
                        let s = format!("{prefix}{candidate}{suffix}");
                        tried += 1;
                        assert_eq!(
                            DType::parse(&s).is_ok(),
                            listed.contains(s.as_str()),
                            "{s:?}"
                        );
                    }
                }
            }
        }
        assert!(tried > 10_000, "{tried}");
    }

    #[test]
    fn big_endian_object_and_structured_dtypes_are_refused_by_name() {
        assert_eq!(
            DType::parse(">f4"),
            Err(DTypeError::BigEndian(">f4".into()))
        );
        assert_eq!(DType::parse("O"), Err(DTypeError::Unsupported("O".into())));
        assert_eq!(
            DType::parse("|S10"),
            Err(DTypeError::Unsupported("|S10".into()))
        );
        assert_eq!(
            DType::parse("[('a', '<f4')]"),
            Err(DTypeError::Unsupported("[('a', '<f4')]".into()))
        );
        assert_eq!(DType::parse("f3"), Err(DTypeError::Unknown("f3".into())));
        assert_eq!(DType::parse(""), Err(DTypeError::Unknown("".into())));
        // What NumPy refuses, mmshare refuses: whitespace, a prefix on a name, other cases,
        // names NumPy 2 removed, and the `!` order character.
        for bad in [
            "<f4 ", " f4", "f4\n", "<float32", "=bool", "F4", "Float32", "float_", "int0", "bool8",
            "i16", "u16", "b2", "f1",
        ] {
            assert_eq!(DType::parse(bad), Err(DTypeError::Unknown(bad.into())));
        }
        assert_eq!(
            DType::parse("!f4"),
            Err(DTypeError::BigEndian("!f4".into()))
        );
        assert_eq!(
            DType::parse(">i8"),
            Err(DTypeError::BigEndian(">i8".into()))
        );
        for long_double in ["g", "<G", "f16", "c32", "longdouble", "float128"] {
            assert_eq!(
                DType::parse(long_double),
                Err(DTypeError::Unsupported(long_double.into()))
            );
        }
        let msg = DType::parse("float33").unwrap_err().to_string();
        assert!(msg.contains("float33"), "{msg}");
    }
}
