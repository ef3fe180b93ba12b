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
pub enum DTypeError {
    /// Not a dtype name mmshare knows.
    #[error("unknown dtype {0:?} (expected a NumPy name such as '<f4', 'f4', 'float32', 'u1')")]
    Unknown(String),
    /// A big-endian descriptor.
    #[error("big-endian dtype {0:?} is not supported: mmshare stores little-endian data")]
    BigEndian(String),
    /// Object, string, datetime, void or structured dtypes.
    #[error("dtype {0:?} is not supported: only bool, integer, float and complex elements are")]
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

    /// Parses a descriptor or an alias.
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
    /// assert!(DType::parse(">f4").is_err());
    /// # Ok::<(), mmshare::DTypeError>(())
    /// ```
    pub fn parse(input: &str) -> Result<DType, DTypeError> {
        let s = input.trim();
        let (byte_order, body) = match s.as_bytes().first() {
            Some(b'<' | b'|' | b'=') => (Some(s.as_bytes()[0]), &s[1..]),
            Some(b'>' | b'!') => return Err(DTypeError::BigEndian(input.to_owned())),
            _ => (None, s),
        };
        let dtype = match body {
            "b1" | "?" | "bool" | "bool_" => DType::Bool,
            "i1" | "int8" | "b" => DType::I8,
            "i2" | "int16" | "h" => DType::I16,
            "i4" | "int32" | "i" => DType::I32,
            "i8" | "int64" | "q" | "l" => DType::I64,
            "u1" | "uint8" | "B" => DType::U8,
            "u2" | "uint16" | "H" => DType::U16,
            "u4" | "uint32" | "I" => DType::U32,
            "u8" | "uint64" | "Q" | "L" => DType::U64,
            "f2" | "float16" | "half" | "e" => DType::F16,
            "f4" | "float32" | "single" | "f" => DType::F32,
            "f8" | "float64" | "double" | "float" | "d" => DType::F64,
            "c8" | "complex64" | "csingle" | "F" => DType::Complex64,
            "c16" | "complex128" | "cdouble" | "complex" | "D" => DType::Complex128,
            _ => return Err(unsupported_or_unknown(input, body)),
        };
        // NumPy writes '|' only for one-byte types; '<' on them is harmless and accepted too.
        if byte_order == Some(b'|') && dtype.size() != 1 {
            return Err(DTypeError::Unknown(input.to_owned()));
        }
        Ok(dtype)
    }
}

fn unsupported_or_unknown(input: &str, body: &str) -> DTypeError {
    let kind = body.chars().next();
    let known_unsupported = matches!(kind, Some('O' | 'S' | 'U' | 'V' | 'M' | 'm' | 'a'))
        || body.starts_with('(')
        || body.starts_with('[')
        || body.starts_with('{')
        || body.contains(',')
        || matches!(
            body,
            "object" | "str" | "bytes" | "void" | "datetime64" | "timedelta64"
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
        assert_eq!(DType::parse("|f4"), Err(DTypeError::Unknown("|f4".into())));
        let msg = DType::parse("float33").unwrap_err().to_string();
        assert!(msg.contains("float33"), "{msg}");
    }
}
