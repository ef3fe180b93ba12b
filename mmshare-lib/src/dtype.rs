//! Element types, named the way NumPy names them.
//!
//! A [`DType`] is stored in the file header as its NumPy array-protocol descriptor (`<f4`, `|u1`,
//! `<c16`, `<M8[ns]`, ...), so any language that knows NumPy's spelling can read it. Parsing
//! also accepts the usual aliases (`f4`, `float32`, `uint8`, `bool`, `datetime64[ns]`, ...).
//! A record (structured) dtype does not fit the header's 16 bytes: the header says `|V` and its
//! itemsize, and the full descr is an extension record of the file (module `record`).
//! Everything is little-endian: the data is native-endian on the little-endian machines mmshare
//! supports, and big-endian, object and string dtypes are refused by name.
//!
//! [`Element`] ties a Rust type to its `DType` so typed handles can check, at open time, that the
//! array holds what the program expects.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use bytemuck::{Pod, Zeroable};

use crate::record::{MAX_ITEMSIZE, RecordType};

/// The unit of a `datetime64` or `timedelta64` dtype, as NumPy spells it in brackets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeUnit {
    /// `Y`
    Years,
    /// `M`
    Months,
    /// `W`
    Weeks,
    /// `D`
    Days,
    /// `h`
    Hours,
    /// `m`
    Minutes,
    /// `s`
    Seconds,
    /// `ms`
    Millis,
    /// `us`
    Micros,
    /// `ns`
    Nanos,
    /// `ps`
    Picos,
    /// `fs`
    Femtos,
    /// `as`
    Attos,
}

/// Every time unit, longest first.
pub const ALL_TIME_UNITS: [TimeUnit; 13] = [
    TimeUnit::Years,
    TimeUnit::Months,
    TimeUnit::Weeks,
    TimeUnit::Days,
    TimeUnit::Hours,
    TimeUnit::Minutes,
    TimeUnit::Seconds,
    TimeUnit::Millis,
    TimeUnit::Micros,
    TimeUnit::Nanos,
    TimeUnit::Picos,
    TimeUnit::Femtos,
    TimeUnit::Attos,
];

impl TimeUnit {
    /// NumPy's code for the unit (`ns`, `s`, `D`, ...).
    pub const fn code(self) -> &'static str {
        match self {
            TimeUnit::Years => "Y",
            TimeUnit::Months => "M",
            TimeUnit::Weeks => "W",
            TimeUnit::Days => "D",
            TimeUnit::Hours => "h",
            TimeUnit::Minutes => "m",
            TimeUnit::Seconds => "s",
            TimeUnit::Millis => "ms",
            TimeUnit::Micros => "us",
            TimeUnit::Nanos => "ns",
            TimeUnit::Picos => "ps",
            TimeUnit::Femtos => "fs",
            TimeUnit::Attos => "as",
        }
    }

    /// The unit for a code, if it is one.
    pub fn from_code(code: &str) -> Option<TimeUnit> {
        ALL_TIME_UNITS.into_iter().find(|u| u.code() == code)
    }
}

/// The element type of an array.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
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
    /// `<M8[unit]`: NumPy `datetime64[unit]`, an `i64` count of units since the Unix epoch
    /// (`i64::MIN` is NaT, "not a time").
    DateTime64(TimeUnit),
    /// `<m8[unit]`: NumPy `timedelta64[unit]`, an `i64` count of units (`i64::MIN` is NaT).
    TimeDelta64(TimeUnit),
    /// `|V{n}`: `n` opaque bytes (NumPy `void`), 1 to 2^31 − 1.
    Void(u32),
    /// A record (structured) dtype: named fields at fixed offsets.
    Record(RecordType),
}

/// Every numeric dtype, in a fixed order (useful for tests and for listing).
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
    /// Object, string, long double, generic-unit time or subarray dtypes.
    #[error(
        "dtype {0:?} is not supported: elements must be bool, 1- to 8-byte integers, float16/32/64, complex64/128, datetime64/timedelta64 with a unit, void or records of these"
    )]
    Unsupported(String),
    /// A record descr that is malformed or describes a layout mmshare does not take.
    #[error("{}", bad_record(descr, reason))]
    BadRecord {
        /// The descr as given (at most 120 characters of it); empty for a record built in code.
        descr: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn bad_record(descr: &str, reason: &str) -> String {
    if descr.is_empty() {
        format!("bad record dtype: {reason}")
    } else {
        format!("bad record dtype {descr:?}: {reason}")
    }
}

impl DType {
    /// The canonical NumPy descriptor (`<f4`, `|u1`, `<M8[ns]`, ...; for a record, its list
    /// as Python prints `repr(dtype.descr)`).
    pub fn descr(&self) -> Cow<'static, str> {
        let scalar = match self {
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
            DType::DateTime64(u) => return format!("<M8[{}]", u.code()).into(),
            DType::TimeDelta64(u) => return format!("<m8[{}]", u.code()).into(),
            DType::Void(n) => return format!("|V{n}").into(),
            DType::Record(r) => return r.descr().to_owned().into(),
        };
        Cow::Borrowed(scalar)
    }

    /// What the file header's 16-byte dtype field holds: the descr, except for a record,
    /// which is `|V` and its itemsize there (its full descr is an extension record).
    pub fn header_descr(&self) -> Cow<'static, str> {
        match self {
            DType::Record(r) => format!("|V{}", r.itemsize()).into(),
            other => other.descr(),
        }
    }

    /// Size of one element in bytes.
    pub fn size(&self) -> usize {
        match self {
            DType::Bool | DType::I8 | DType::U8 => 1,
            DType::I16 | DType::U16 | DType::F16 => 2,
            DType::I32 | DType::U32 | DType::F32 => 4,
            DType::I64
            | DType::U64
            | DType::F64
            | DType::Complex64
            | DType::DateTime64(_)
            | DType::TimeDelta64(_) => 8,
            DType::Complex128 => 16,
            DType::Void(n) => *n as usize,
            DType::Record(r) => r.itemsize(),
        }
    }

    /// The NumPy type name (`float32`, `uint8`, `datetime64[ns]`, `void96`, ...; a record's
    /// descr), for messages and the CLI.
    pub fn numpy_name(&self) -> Cow<'static, str> {
        let name = match self {
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
            DType::DateTime64(u) => return format!("datetime64[{}]", u.code()).into(),
            DType::TimeDelta64(u) => return format!("timedelta64[{}]", u.code()).into(),
            DType::Void(n) => return format!("void{}", u64::from(*n) * 8).into(),
            DType::Record(r) => return r.descr().to_owned().into(),
        };
        Cow::Borrowed(name)
    }

    /// The record layout, for a record dtype.
    pub fn as_record(&self) -> Option<&RecordType> {
        match self {
            DType::Record(r) => Some(r),
            _ => None,
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
        if input.starts_with('[') {
            return crate::record::parse_record(input).map(DType::Record);
        }
        if let Some(dtype) = DTYPE_NAMES.iter().find(|(n, _)| *n == input) {
            return Ok(dtype.1.clone());
        }
        if let Some(dtype) = parse_time_name(input)? {
            return Ok(dtype);
        }
        let (prefix, code) = match input.as_bytes().first() {
            Some(b'<' | b'>' | b'=' | b'|' | b'!') => input.split_at(1),
            _ => ("", input),
        };
        let big = prefix == ">" || prefix == "!";
        if let Some(dtype) = parse_void_or_time_code(input, code)? {
            return match dtype {
                // Byte order means nothing for bytes: NumPy maps `>V8` to `|V8`.
                DType::Void(_) if prefix != "!" => Ok(dtype),
                _ if big => Err(DTypeError::BigEndian(input.to_owned())),
                _ => Ok(dtype),
            };
        }
        match DTYPE_CODES.iter().find(|(c, _)| *c == code) {
            Some((_, dtype)) if !big => Ok(dtype.clone()),
            // Byte order means nothing for one byte: NumPy maps `>u1` to `|u1`.
            Some((_, dtype)) if prefix == ">" && dtype.size() == 1 => Ok(dtype.clone()),
            Some(_) => Err(DTypeError::BigEndian(input.to_owned())),
            None => Err(unsupported_or_unknown(input, code)),
        }
    }
}

/// `datetime64[unit]` and `timedelta64[unit]` (names take no byte-order prefix).
fn parse_time_name(input: &str) -> Result<Option<DType>, DTypeError> {
    time_of(input, input, ["datetime64", "timedelta64"])
}

/// The time `text` (part of `input`) names if it starts with the datetime or the timedelta
/// spelling of `kinds` and a bracketed unit; `None` if it starts with neither.
fn time_of(input: &str, text: &str, kinds: [&str; 2]) -> Result<Option<DType>, DTypeError> {
    let makers: [fn(TimeUnit) -> DType; 2] = [DType::DateTime64, DType::TimeDelta64];
    for (kind, make) in kinds.into_iter().zip(makers) {
        if let Some(rest) = text.strip_prefix(kind) {
            if rest.is_empty() {
                return Err(DTypeError::Unsupported(input.to_owned()));
            }
            return time_unit(input, rest).map(|u| Some(make(u)));
        }
    }
    Ok(None)
}

/// `V{n}`, `M8[unit]` and `m8[unit]` after the byte-order prefix.
fn parse_void_or_time_code(input: &str, code: &str) -> Result<Option<DType>, DTypeError> {
    if let Some(digits) = code.strip_prefix('V') {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(None);
        }
        return match digits.parse::<u32>() {
            Ok(n) if n > 0 && n as usize <= MAX_ITEMSIZE => Ok(Some(DType::Void(n))),
            _ => Err(DTypeError::Unsupported(input.to_owned())),
        };
    }
    time_of(input, code, ["M8", "m8"])
}

/// The unit of `[unit]`; a missing, generic or multiplied unit (`[10ms]`) is refused.
fn time_unit(input: &str, bracketed: &str) -> Result<TimeUnit, DTypeError> {
    let unit = bracketed
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(|| DTypeError::Unknown(input.to_owned()))?;
    TimeUnit::from_code(unit).ok_or_else(|| {
        if unit.starts_with(|c: char| c.is_ascii_digit()) || unit == "generic" {
            DTypeError::Unsupported(input.to_owned())
        } else {
            DTypeError::Unknown(input.to_owned())
        }
    })
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
        f.write_str(&self.descr())
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
/// Implemented for the integer and float primitives, [`half::f16`], [`Bool8`],
/// [`num_complex::Complex`] of `f32`/`f64`, [`DateTime64`] and [`TimeDelta64`], and for every
/// [`Record`](crate::Record) struct; for nothing else: the trait is *sealed*. Typed handles
/// index the mapping by `size_of::<T>()`, so every implementor is [`Pod`] (any bit pattern is a
/// valid value, which is what makes reading bytes another process wrote sound), and typed
/// handles check, when they open an array, that the file's dtype is `T::dtype()` and that
/// `size_of::<T>()` is its itemsize: a mismatch is an error, not an out-of-bounds access.
///
/// Code outside this crate cannot implement it:
///
/// ```compile_fail
/// #[derive(Clone, Copy, bytemuck::Zeroable, bytemuck::Pod)]
/// #[repr(transparent)]
/// struct Big([u64; 512]);
/// impl mmshare::Element for Big {
///     fn dtype() -> Result<mmshare::DType, mmshare::DTypeError> {
///         Ok(mmshare::DType::U8)
///     }
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
    ///
    /// # Errors
    /// Only for a [`Record`](crate::Record) whose fields do not make a valid record dtype.
    fn dtype() -> Result<DType, DTypeError>;
}

/// The seal: a public trait in a private module, so no other crate can name it.
pub(crate) mod sealed {
    /// Implemented exactly for the types the `element!` list below names, the time types and
    /// every `Record`.
    pub trait Sealed {}
}

macro_rules! element {
    ($($t:ty => $d:ident),* $(,)?) => {
        $(
            impl sealed::Sealed for $t {}
            impl Element for $t {
                fn dtype() -> Result<DType, DTypeError> {
                    Ok(DType::$d)
                }
            }
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

/// Marker types naming a [`TimeUnit`] in a Rust type: `DateTime64<units::Nanos>` is NumPy's
/// `datetime64[ns]`.
pub mod units {
    use super::TimeUnit;

    /// A unit marker.
    pub trait Unit: Copy + Send + Sync + 'static {
        /// The unit it names.
        const UNIT: TimeUnit;
    }

    macro_rules! units {
        ($($name:ident),* $(,)?) => {
            $(
                #[doc = concat!("The unit [`TimeUnit::", stringify!($name), "`].")]
                #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
                pub struct $name;
                impl Unit for $name {
                    const UNIT: TimeUnit = TimeUnit::$name;
                }
            )*
        };
    }

    units!(
        Years, Months, Weeks, Days, Hours, Minutes, Seconds, Millis, Micros, Nanos, Picos, Femtos,
        Attos
    );
}

macro_rules! time_type {
    ($(#[$doc:meta])* $name:ident, $variant:ident, $numpy:literal) => {
        $(#[$doc])*
        #[repr(transparent)]
        pub struct $name<U: units::Unit> {
            /// The count of units (`i64::MIN` is NaT).
            pub value: i64,
            unit: PhantomData<U>,
        }

        impl<U: units::Unit> $name<U> {
            /// NumPy's NaT ("not a time"), `i64::MIN`.
            pub const NAT: Self = Self::new(i64::MIN);

            /// `value` units.
            pub const fn new(value: i64) -> Self {
                $name {
                    value,
                    unit: PhantomData,
                }
            }

            /// True for NaT.
            pub const fn is_nat(self) -> bool {
                self.value == i64::MIN
            }
        }

        impl<U: units::Unit> Clone for $name<U> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<U: units::Unit> Copy for $name<U> {}
        impl<U: units::Unit> PartialEq for $name<U> {
            fn eq(&self, other: &Self) -> bool {
                self.value == other.value
            }
        }
        impl<U: units::Unit> Eq for $name<U> {}
        impl<U: units::Unit> std::hash::Hash for $name<U> {
            fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
                self.value.hash(h);
            }
        }
        impl<U: units::Unit> PartialOrd for $name<U> {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        impl<U: units::Unit> Ord for $name<U> {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.value.cmp(&other.value)
            }
        }
        impl<U: units::Unit> Default for $name<U> {
            fn default() -> Self {
                Self::new(0)
            }
        }
        impl<U: units::Unit> fmt::Debug for $name<U> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                if self.is_nat() {
                    write!(f, "{}[{}](NaT)", $numpy, U::UNIT.code())
                } else {
                    write!(f, "{}[{}]({})", $numpy, U::UNIT.code(), self.value)
                }
            }
        }
        // SAFETY: `repr(transparent)` over an `i64` (the marker is a zero-sized `PhantomData`),
        // so every bit pattern is a valid value, all zeroes included, and there is no padding.
        unsafe impl<U: units::Unit> Zeroable for $name<U> {}
        // SAFETY: as above; `U: Copy + 'static` makes the type `Copy + 'static`.
        unsafe impl<U: units::Unit> Pod for $name<U> {}
        impl<U: units::Unit> sealed::Sealed for $name<U> {}
        impl<U: units::Unit> Element for $name<U> {
            fn dtype() -> Result<DType, DTypeError> {
                Ok(DType::$variant(U::UNIT))
            }
        }
    };
}

time_type!(
    /// NumPy `datetime64[unit]`: a count of `U` since 1970-01-01T00:00:00 (`i64::MIN` is NaT).
    ///
    /// ```
    /// use mmshare::{DType, DateTime64, Element, TimeUnit, units::Nanos};
    /// assert_eq!(DateTime64::<Nanos>::dtype()?, DType::DateTime64(TimeUnit::Nanos));
    /// let t = DateTime64::<Nanos>::from_system_time(std::time::SystemTime::UNIX_EPOCH);
    /// assert_eq!(t.value, 0);
    /// # Ok::<(), mmshare::DTypeError>(())
    /// ```
    DateTime64,
    DateTime64,
    "datetime64"
);

time_type!(
    /// NumPy `timedelta64[unit]`: a count of `U` (`i64::MIN` is NaT).
    TimeDelta64,
    TimeDelta64,
    "timedelta64"
);

impl<U: units::Unit> DateTime64<U> {
    /// The time `t`, truncated toward the epoch to whole units; NaT if it does not fit in an
    /// `i64` count, or the unit has no fixed length (years, months).
    pub fn from_system_time(t: std::time::SystemTime) -> Self {
        let Some(per_second) = attos_per_unit(U::UNIT) else {
            return Self::NAT;
        };
        let (sign, d) = match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => (1i128, d),
            Err(e) => (-1, e.duration()),
        };
        let attos = i128::from(d.as_secs()) * 1_000_000_000_000_000_000
            + i128::from(d.subsec_nanos()) * 1_000_000_000;
        i64::try_from(sign * (attos / per_second))
            .ok()
            .filter(|&v| v != i64::MIN)
            .map_or(Self::NAT, Self::new)
    }
}

/// Attoseconds in one unit, for the units of a fixed length.
fn attos_per_unit(unit: TimeUnit) -> Option<i128> {
    const S: i128 = 1_000_000_000_000_000_000;
    Some(match unit {
        TimeUnit::Years | TimeUnit::Months => return None,
        TimeUnit::Weeks => 7 * 86_400 * S,
        TimeUnit::Days => 86_400 * S,
        TimeUnit::Hours => 3_600 * S,
        TimeUnit::Minutes => 60 * S,
        TimeUnit::Seconds => S,
        TimeUnit::Millis => S / 1_000,
        TimeUnit::Micros => S / 1_000_000,
        TimeUnit::Nanos => S / 1_000_000_000,
        TimeUnit::Picos => S / 1_000_000_000_000,
        TimeUnit::Femtos => S / 1_000_000_000_000_000,
        TimeUnit::Attos => 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_descr_parses_back_to_itself() {
        for d in ALL_DTYPES {
            assert_eq!(DType::parse(&d.descr()), Ok(d.clone()));
            assert_eq!(DType::parse(&d.numpy_name()), Ok(d));
        }
    }

    #[test]
    fn element_sizes_match_dtype_sizes() {
        fn check<T: Element>() {
            let dtype = T::dtype().unwrap();
            assert_eq!(size_of::<T>(), dtype.size(), "{dtype}");
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

    /// FORMAT.md's rule for void: `V` and a size of at least 1 (leading zeros allowed), after
    /// at most one of `<`, `>`, `=`, `|`.
    fn is_void_spelling(s: &str) -> bool {
        let body = s.strip_prefix(['<', '>', '=', '|']).unwrap_or(s);
        body.strip_prefix('V').is_some_and(|digits| {
            !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && digits.parse::<u64>().is_ok_and(|n| n >= 1)
        })
    }

    /// `DType::parse` accepts exactly the spellings FORMAT.md tables (which
    /// tests/python/test_format_numpy.py checks against `np.dtype()`), each as its descr.
    #[test]
    fn parse_accepts_exactly_the_format_md_table() {
        let table = format_md_table();
        assert_eq!(table.len(), 179, "spellings in the table");
        for (spelling, descr) in &table {
            match DType::parse(spelling) {
                Ok(d) => assert_eq!(d.descr(), descr.as_str(), "{spelling:?}"),
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
                            listed.contains(s.as_str()) || is_void_spelling(&s),
                            "{s:?}"
                        );
                    }
                }
            }
        }
        assert!(tried > 10_000, "{tried}");
    }

    #[test]
    fn big_endian_object_and_malformed_record_dtypes_are_refused_by_name() {
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
            DType::parse("[('a', '>f4')]").unwrap_err().to_string(),
            "bad record dtype \"[('a', '>f4')]\": field \"a\": big-endian dtype \">f4\" is not supported: mmshare stores little-endian data"
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

    #[test]
    fn times_parse_in_every_spelling_numpy_gives_them() {
        for unit in ALL_TIME_UNITS {
            let u = unit.code();
            let dt = DType::DateTime64(unit);
            let td = DType::TimeDelta64(unit);
            assert_eq!(TimeUnit::from_code(u), Some(unit));
            for (spellings, want) in [
                (["M8", "<M8", "=M8", "|M8", "datetime64"], &dt),
                (["m8", "<m8", "=m8", "|m8", "timedelta64"], &td),
            ] {
                for s in spellings {
                    assert_eq!(
                        DType::parse(&format!("{s}[{u}]")).as_ref(),
                        Ok(want),
                        "{s}[{u}]"
                    );
                }
            }
            assert_eq!(dt.descr(), format!("<M8[{u}]"));
            assert_eq!(td.descr(), format!("<m8[{u}]"));
            assert_eq!(dt.numpy_name(), format!("datetime64[{u}]"));
            assert_eq!((dt.size(), td.size()), (8, 8));
            assert_eq!(DType::parse(&dt.header_descr()), Ok(dt.clone()));
            assert!(dt.header_descr().len() <= 16);
            assert_eq!(
                DType::parse(&format!(">M8[{u}]")),
                Err(DTypeError::BigEndian(format!(">M8[{u}]")))
            );
        }
        // No unit (NumPy's generic unit), a multiple, or a unit NumPy does not know.
        for unsupported in ["M8", "<m8", "datetime64", "M8[10ms]", "m8[generic]"] {
            assert_eq!(
                DType::parse(unsupported),
                Err(DTypeError::Unsupported(unsupported.into())),
                "{unsupported}"
            );
        }
        for unknown in ["M8[B]", "M8[ns", "M8[ns] ", "datetime64[NS]", "M8ns"] {
            assert_eq!(
                DType::parse(unknown),
                Err(DTypeError::Unknown(unknown.into())),
                "{unknown}"
            );
        }
    }

    #[test]
    fn void_is_a_number_of_opaque_bytes() {
        assert_eq!(DType::parse("V12"), Ok(DType::Void(12)));
        assert_eq!(DType::parse(">V12"), Ok(DType::Void(12)));
        assert_eq!(DType::parse("V012"), Ok(DType::Void(12)));
        assert_eq!(DType::Void(12).descr(), "|V12");
        assert_eq!(DType::Void(12).numpy_name(), "void96");
        assert_eq!(DType::Void(12).size(), 12);
        assert_eq!(
            DType::parse("V2147483647"),
            Ok(DType::Void(i32::MAX as u32))
        );
        for refused in ["V0", "V", "void", "V2147483648", "V99999999999999999999"] {
            assert!(DType::parse(refused).is_err(), "{refused}");
        }
        assert_eq!(
            DType::parse("!V8"),
            Err(DTypeError::BigEndian("!V8".into()))
        );
    }

    fn rec(text: &str) -> crate::record::RecordType {
        match DType::parse(text) {
            Ok(DType::Record(r)) => r,
            other => panic!("{text}: {other:?}"),
        }
    }

    /// The layouts and canonical texts NumPy 2 gives (`repr(np.dtype(...).descr)`, checked
    /// with NumPy 2.4; tests/python/test_records.py checks the same against NumPy itself).
    #[test]
    fn records_parse_to_numpys_layout_and_print_as_numpy_does() {
        let r = rec(
            "[('x', '<f4'), ('pad', '|V4'), ('t', '<M8[ns]'), ('m', '<f8', (2, 3)), \
                     ('n', [('a', '|u1'), ('b', '<i2')], (2,))]",
        );
        assert_eq!(r.itemsize(), 4 + 4 + 8 + 48 + 6);
        let offsets: Vec<_> = r
            .fields()
            .iter()
            .map(|f| (f.name.as_str(), f.offset))
            .collect();
        assert_eq!(
            offsets,
            [("x", 0), ("pad", 4), ("t", 8), ("m", 16), ("n", 64)]
        );
        assert_eq!(r.fields()[3].shape, [2, 3]);
        assert_eq!(r.fields()[4].shape, [2]);
        assert_eq!(r.fields()[4].dtype.size(), 3);
        assert_eq!(
            r.descr(),
            "[('x', '<f4'), ('pad', '|V4'), ('t', '<M8[ns]'), ('m', '<f8', (2, 3)), ('n', [('a', '|u1'), ('b', '<i2')], (2,))]"
        );
        // Padding: gaps and a trailing one, exactly NumPy's descr of
        // {'names': ['x', 'y'], 'formats': ['<f4', '<u8'], 'offsets': [0, 8], 'itemsize': 24}.
        let padded = rec("[('x', '<f4'), ('', '|V4'), ('y', '<u8'), ('', '|V8')]");
        assert_eq!(padded.itemsize(), 24);
        assert_eq!(padded.field("y").map(|f| f.offset), Some(8));
        assert_eq!(
            padded.descr(),
            "[('x', '<f4'), ('', '|V4'), ('y', '<u8'), ('', '|V8')]"
        );
        // Any spelling a user may type reads as the same layout: double quotes, aliases, no
        // spaces, trailing commas, a bare number as a 1-d shape, two paddings in a row.
        let loose = rec("[(\"x\",'f4',),('','V2'),('','V2'),('y','uint64'),('','V8')]");
        assert_eq!(loose, padded);
        assert_eq!(DType::Record(loose.clone()).descr(), padded.descr());
        assert_eq!(rec("[('a', 'f4', 3)]").descr(), "[('a', '<f4', (3,))]");
        assert_eq!(rec("[('a', 'f4', (1,))]").fields()[0].shape, [1]);
        let d = DType::Record(padded);
        assert_eq!(d.header_descr(), "|V24");
        assert_eq!(d.size(), 24);
        assert_eq!(d.to_string(), d.descr());
    }

    #[test]
    fn bad_records_are_refused_with_what_is_wrong() {
        let why = |text: &str| match DType::parse(text) {
            Err(DTypeError::BadRecord { reason, descr }) => {
                assert_eq!(
                    descr,
                    text.chars().take(120).collect::<String>()
                        + if text.chars().count() > 120 {
                            "..."
                        } else {
                            ""
                        }
                );
                reason
            }
            other => panic!("{text}: {other:?}"),
        };
        for (text, expected) in [
            ("[]", "at least one field"),
            ("[('a', '<f4'), ('a', '<u1')]", "appears twice"),
            ("[('', '<f4')]", "unnamed entry must be padding"),
            ("[('x', '|V0')]", "not supported"),
            ("[('it''s', '<f4')]", "expected ',' or ')'"),
            ("[('a\\b', '<f4')]", "backslash"),
            ("[('\u{e9}', '<f4')]", "printable ASCII"),
            ("[('a', '<f4', (0,))]", "at least 1"),
            ("[('a', '<f4', (2, 'x'))]", "not a number"),
            ("[('a', 'O')]", "not supported"),
            ("[('a', '|S8')]", "not supported"),
            ("[(('title', 'a'), '<f4')]", "titles"),
            ("[('a', '<f4', (3,), 1)]", "not 2 or 3"),
            ("[('a', '<f4')] x", "after the list"),
            ("[('a', '<f4')", "unexpected end"),
            ("[('a', '<f4'),, ]", "expected a string"),
            (
                "[('a', '<u1', (65536, 65536))]",
                "ends past 2147483647 bytes",
            ),
            ("[('a', '<u1', 99999999999999999999999)]", "too large"),
            ("[('a', [])]", "at least one field"),
            ("[('n', \"[('a', 'f4')]\")]", "not a string"),
            ("[('a', '<f4')] [('b', '<f4')]", "after the list"),
        ] {
            let reason = why(text);
            assert!(reason.contains(expected), "{text}: {reason}");
        }
        let long_name = format!("[('{}', '<f4')]", "n".repeat(256));
        assert!(why(&long_name).contains("at most 255"));
        // Bounds: nesting, field count, text length; each refused, never a deep recursion.
        let mut nested = "[('x', '<f4')]".to_owned();
        for _ in 0..crate::record::MAX_RECORD_DEPTH {
            nested = format!("[('n', {nested})]");
        }
        assert!(why(&nested).contains("nested"), "{}", why(&nested));
        let deep = "[".repeat(100_000);
        assert!(why(&deep).contains("at most"));
        let brackets = "[(".repeat(1000) + "'a', 'f4'" + &")]".repeat(1000);
        assert!(
            why(&brackets).contains("nested too deep"),
            "{}",
            why(&brackets)
        );
        let many: Vec<String> = (0..=crate::record::MAX_RECORD_FIELDS)
            .map(|i| format!("('f{i}','u1')"))
            .collect();
        let many = format!("[{}]", many.join(","));
        assert!(why(&many).contains("fields"), "{}", why(&many));
        // A bare error message names the record as given (abbreviated).
        let msg = DType::parse(&long_name).unwrap_err().to_string();
        assert!(msg.starts_with("bad record dtype \"[('nnnn"), "{msg}");
        assert!(msg.contains("..."), "{msg}");
    }

    #[test]
    fn built_records_are_checked_as_parsed_ones_are() {
        use crate::record::{RecordField, RecordType};
        let ok = RecordType::new(
            vec![
                RecordField::new("x", 0, DType::F32),
                RecordField::new("v", 8, DType::U16).with_shape(vec![2]),
            ],
            16,
        )
        .unwrap();
        assert_eq!(
            ok.descr(),
            "[('x', '<f4'), ('', '|V4'), ('v', '<u2', (2,)), ('', '|V4')]"
        );
        assert_eq!(rec(ok.descr()), ok);
        let overlap = RecordType::new(
            vec![
                RecordField::new("x", 0, DType::F32),
                RecordField::new("y", 2, DType::F32),
            ],
            8,
        );
        assert!(overlap.unwrap_err().to_string().contains("overlaps"));
        let past = RecordType::new(vec![RecordField::new("x", 6, DType::F32)], 8);
        assert!(past.unwrap_err().to_string().contains("past the itemsize"));
        let void0 = RecordType::new(vec![RecordField::new("x", 0, DType::Void(0))], 8);
        assert!(void0.unwrap_err().to_string().contains("|V0"));
        let spec = crate::format::ArraySpec::new("v", DType::Void(0), vec![1]);
        assert!(crate::format::Header::new(&spec).is_err());
        let unordered = RecordType::new(
            vec![
                RecordField::new("y", 4, DType::F32),
                RecordField::new("x", 0, DType::F32),
            ],
            8,
        );
        assert!(unordered.unwrap_err().to_string().contains("offset order"));
    }
}
