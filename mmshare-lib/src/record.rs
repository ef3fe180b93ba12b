//! Record (structured) dtypes: NumPy's `[('x', '<f4'), ('y', '<f4'), ('id', '<u4')]`.
//!
//! A record dtype is written the way NumPy writes `dtype.descr` and the `.npy` format stores
//! it: a Python list of `(name, format)` or `(name, format, shape)` tuples, where `format` is
//! a scalar descr (`'<f4'`, `'<M8[ns]'`) or, for a nested record, another such list, and
//! `shape` makes the field a fixed-size subarray. Fields are laid out one after another;
//! a gap before a field, or after the last one, is an unnamed void entry `('', '|V4')`. So the
//! list fixes every field's offset and the record's itemsize, exactly as NumPy's
//! `np.lib.format.descr_to_dtype` reads it back.
//!
//! [`RecordType`] holds the decoded form (fields with offsets, itemsize), and
//! [`RecordType::descr`] writes the canonical text, character for character what Python prints
//! for `repr(dtype.descr)`, so that text compares equal exactly when the layouts do.
//!
//! Everything a record may contain is bounded, because the daemon parses records that clients
//! send: [`MAX_DESCR_LEN`] bytes of text, [`MAX_RECORD_FIELDS`] fields in all,
//! [`MAX_RECORD_DEPTH`] levels of nesting, [`MAX_ITEMSIZE`] bytes per record.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::dtype::{DType, DTypeError, Element};

/// Longest canonical descr of a record, in bytes (and longest text [`DType::parse`] reads as
/// one, four times this, since a user's spelling may be longer than the canonical one).
pub const MAX_DESCR_LEN: usize = 16384;
/// Most fields a record may have, counting those of nested records and padding entries.
pub const MAX_RECORD_FIELDS: usize = 1024;
/// Deepest nesting of records in records (a plain record is depth 1).
pub const MAX_RECORD_DEPTH: usize = 8;
/// Largest itemsize of a record or a void dtype: NumPy's own limit (a C `int`).
pub const MAX_ITEMSIZE: usize = i32::MAX as usize;
/// Longest field name, in bytes.
pub const MAX_FIELD_NAME_LEN: usize = 255;
/// Most dimensions of a subarray field.
pub const MAX_FIELD_NDIM: usize = 32;

/// One named field of a record: where it is and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RecordField {
    /// The name (printable ASCII without `'` or `\`, 1 to [`MAX_FIELD_NAME_LEN`] bytes).
    pub name: String,
    /// Byte offset from the start of the record.
    pub offset: usize,
    /// The element type (itself a record for a nested one).
    pub dtype: DType,
    /// The subarray shape, empty for a single element (C order, as NumPy's subarrays).
    pub shape: Vec<usize>,
}

impl RecordField {
    /// A field `name` of one `dtype` element at byte `offset`.
    pub fn new(name: impl Into<String>, offset: usize, dtype: DType) -> RecordField {
        RecordField {
            name: name.into(),
            offset,
            dtype,
            shape: Vec::new(),
        }
    }

    /// The same field as a subarray of `shape` elements.
    #[must_use]
    pub fn with_shape(mut self, shape: impl Into<Vec<usize>>) -> RecordField {
        self.shape = shape.into();
        self
    }

    /// The field of a [`Record`] struct: `name` at `offset`, of Rust type `T` (an [`Element`],
    /// or an array of them, which makes a subarray). What `#[derive(Record)]` generates.
    ///
    /// # Errors
    /// A `T` whose own dtype is not valid (a nested record with a bad layout).
    pub fn of<T: FieldType>(name: &str, offset: usize) -> Result<RecordField, DTypeError> {
        let (dtype, shape) = T::field_type()?;
        Ok(RecordField {
            name: name.to_owned(),
            offset,
            dtype,
            shape,
        })
    }

    /// Bytes the field takes (its dtype's size times its shape's product); `None` on
    /// overflow.
    fn len(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(self.dtype.size(), |n, &d| n.checked_mul(d))
    }
}

/// A record (structured) dtype: named fields at fixed offsets within `itemsize` bytes.
/// Cheap to clone (the fields are shared).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RecordType(Arc<Inner>);

#[derive(Debug, PartialEq, Eq, Hash)]
struct Inner {
    fields: Vec<RecordField>,
    itemsize: usize,
    /// Entries of the descr, padding and nested records' entries included.
    entries: usize,
    descr: String,
}

impl RecordType {
    /// Checks and builds a record of `fields` in `itemsize` bytes.
    ///
    /// # Errors
    /// [`DTypeError::BadRecord`] when it has no field, a name is empty, repeated, too long or
    /// holds a character other than printable ASCII (`'` and `\` excluded), a field overlaps
    /// the one before (fields must be in offset order, as NumPy's descr requires) or runs
    /// past `itemsize`, a subarray has a zero or more than [`MAX_FIELD_NDIM`] dimensions, or
    /// a bound of this module is exceeded.
    pub fn new(fields: Vec<RecordField>, itemsize: usize) -> Result<RecordType, DTypeError> {
        let mut end = 0usize;
        let mut total = 0usize;
        let mut names = std::collections::HashSet::new();
        let bad = |reason: String| DTypeError::BadRecord {
            descr: String::new(),
            reason,
        };
        if fields.is_empty() {
            return Err(bad("a record needs at least one field".into()));
        }
        for f in &fields {
            check_field_name(&f.name).map_err(&bad)?;
            if let DType::Void(n) = f.dtype
                && (n == 0 || n as usize > MAX_ITEMSIZE)
            {
                return Err(bad(format!(
                    "field {:?} is |V{n}, not 1 to {MAX_ITEMSIZE} bytes",
                    f.name
                )));
            }
            if !names.insert(f.name.as_str()) {
                return Err(bad(format!("field name {:?} appears twice", f.name)));
            }
            if f.shape.len() > MAX_FIELD_NDIM {
                return Err(bad(format!(
                    "field {:?} has {} dimensions; at most {MAX_FIELD_NDIM} are allowed",
                    f.name,
                    f.shape.len()
                )));
            }
            if f.shape.contains(&0) {
                return Err(bad(format!(
                    "field {:?} has shape {:?}; subarray dimensions must be at least 1",
                    f.name, f.shape
                )));
            }
            let len = f.len().filter(|&n| n <= MAX_ITEMSIZE).ok_or_else(|| {
                bad(format!(
                    "field {:?} is larger than {MAX_ITEMSIZE} bytes",
                    f.name
                ))
            })?;
            if f.offset < end {
                return Err(bad(format!(
                    "field {:?} at offset {} overlaps what comes before it (which ends at {end}); \
                     fields must be in offset order and must not overlap",
                    f.name, f.offset
                )));
            }
            let gap = usize::from(f.offset > end);
            end = f.offset.saturating_add(len);
            total += 1 + gap + nested_fields(&f.dtype);
        }
        if itemsize > MAX_ITEMSIZE {
            return Err(bad(format!(
                "itemsize {itemsize} is larger than {MAX_ITEMSIZE} bytes"
            )));
        }
        if end > itemsize {
            return Err(bad(format!(
                "the fields end at byte {end}, past the itemsize {itemsize}"
            )));
        }
        total += usize::from(itemsize > end);
        if total > MAX_RECORD_FIELDS {
            return Err(bad(format!(
                "{total} fields (padding and nested fields included); at most {MAX_RECORD_FIELDS} are allowed"
            )));
        }
        if depth_of(&fields) > MAX_RECORD_DEPTH {
            return Err(bad(format!(
                "records are nested more than {MAX_RECORD_DEPTH} deep"
            )));
        }
        let mut descr = String::new();
        write_descr(&mut descr, &fields, itemsize);
        if descr.len() > MAX_DESCR_LEN {
            return Err(bad(format!(
                "its descr is {} bytes; at most {MAX_DESCR_LEN} are allowed",
                descr.len()
            )));
        }
        Ok(RecordType(Arc::new(Inner {
            fields,
            itemsize,
            entries: total,
            descr,
        })))
    }

    /// The named fields, in offset order (padding is not a field).
    pub fn fields(&self) -> &[RecordField] {
        &self.0.fields
    }

    /// Bytes per record.
    pub fn itemsize(&self) -> usize {
        self.0.itemsize
    }

    /// The canonical descr: exactly what Python prints for `repr(dtype.descr)`.
    pub fn descr(&self) -> &str {
        &self.0.descr
    }

    /// The field called `name`, if there is one.
    pub fn field(&self, name: &str) -> Option<&RecordField> {
        self.0.fields.iter().find(|f| f.name == name)
    }
}

fn nested_fields(dtype: &DType) -> usize {
    match dtype {
        DType::Record(r) => r.0.entries,
        _ => 0,
    }
}

fn depth_of(fields: &[RecordField]) -> usize {
    1 + fields
        .iter()
        .map(|f| match &f.dtype {
            DType::Record(r) => depth_of(r.fields()),
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

fn check_field_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(
            "a field needs a name (only padding, an unnamed '|Vn' entry, may have none)".into(),
        );
    }
    if name.len() > MAX_FIELD_NAME_LEN {
        return Err(format!(
            "field name of {} bytes; at most {MAX_FIELD_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(' '..='~').contains(&c) || c == '\'' || c == '\\')
    {
        return Err(format!(
            "field name {name:?} holds {c:?}: names are printable ASCII without ' or \\"
        ));
    }
    Ok(())
}

/// Appends the canonical descr of a record (Python's `repr(dtype.descr)`).
fn write_descr(out: &mut String, fields: &[RecordField], itemsize: usize) {
    out.push('[');
    let mut end = 0usize;
    let mut first = true;
    let mut sep = |out: &mut String| {
        if !std::mem::take(&mut first) {
            out.push_str(", ");
        }
    };
    for f in fields {
        if f.offset > end {
            sep(out);
            let _ = write!(out, "('', '|V{}')", f.offset - end);
        }
        sep(out);
        let _ = write!(out, "('{}', ", f.name);
        match &f.dtype {
            DType::Record(r) => out.push_str(r.descr()),
            other => {
                let _ = write!(out, "'{}'", other.descr());
            }
        }
        match f.shape.as_slice() {
            [] => {}
            [one] => {
                let _ = write!(out, ", ({one},)");
            }
            dims => {
                out.push_str(", (");
                for (i, d) in dims.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let _ = write!(out, "{d}");
                }
                out.push(')');
            }
        }
        out.push(')');
        end = f.offset + f.len().unwrap_or(0);
    }
    if itemsize > end {
        sep(out);
        let _ = write!(out, "('', '|V{}')", itemsize - end);
    }
    out.push(']');
}

/// A type a field of a [`Record`] struct may have: every [`Element`] (numbers, [`crate::Bool8`],
/// times, other records) and arrays of them (a subarray field; `[[f32; 3]; 2]` has shape
/// `(2, 3)`).
pub trait FieldType {
    /// The field's element dtype and subarray shape.
    ///
    /// # Errors
    /// A nested record whose own layout is not a valid record.
    fn field_type() -> Result<(DType, Vec<usize>), DTypeError>;
}

impl<T: Element> FieldType for T {
    fn field_type() -> Result<(DType, Vec<usize>), DTypeError> {
        Ok((T::dtype()?, Vec::new()))
    }
}

impl<T: FieldType, const N: usize> FieldType for [T; N] {
    fn field_type() -> Result<(DType, Vec<usize>), DTypeError> {
        let (dtype, mut shape) = T::field_type()?;
        shape.insert(0, N);
        Ok((dtype, shape))
    }
}

/// A `#[repr(C)]` plain-old-data struct that is the element of a record dtype: the Rust twin
/// of a NumPy structured dtype.
///
/// Derive it (`#[derive(mmshare::Record)]`, feature `derive`) together with
/// [`bytemuck::Pod`] and [`bytemuck::Zeroable`]; every record type is then an [`Element`], so
/// `Array<T>`, `Publisher<T>` and `Subscriber<T>` take it. The derive lists each field's name,
/// offset (`offset_of!`) and type; an array or a frame opens as `T` only if its dtype is
/// exactly that layout (names, offsets, dtypes, subarray shapes and itemsize), so a struct
/// that does not match what another program wrote is an error at open, never a misread.
///
/// Implementing it by hand is safe: the bytes are only ever read as `T` if `size_of::<T>()`
/// equals the file's itemsize, and `Pod` makes every bit pattern a valid `T`, so a wrong list
/// of fields can make an open fail, never cause undefined behaviour.
///
/// Padding must be explicit, because `Pod` types have none: a `[u8; N]` field marked
/// `#[mmshare(padding)]` is left out of the dtype (its bytes are the record's unnamed gap).
/// `#[mmshare(rename = "...")]` gives a field another dtype name.
///
/// ```
/// # #[cfg(feature = "derive")] {
/// use mmshare::{DType, Element, Record};
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, Record)]
/// #[repr(C)]
/// struct Detection {
///     x: f32,
///     y: f32,
///     id: u32,
///     #[mmshare(padding)]
///     _pad: [u8; 4],
///     score: [f64; 2],
/// }
/// assert_eq!(
///     Detection::dtype()?.descr(),
///     "[('x', '<f4'), ('y', '<f4'), ('id', '<u4'), ('', '|V4'), ('score', '<f8', (2,))]"
/// );
/// # }
/// # Ok::<(), mmshare::DTypeError>(())
/// ```
pub trait Record: bytemuck::Pod + Send + Sync + 'static {
    /// The named fields, in offset order.
    ///
    /// # Errors
    /// A field whose type's dtype is not valid (a nested record with a bad layout).
    fn fields() -> Result<Vec<RecordField>, DTypeError>;
}

impl<T: Record> crate::dtype::sealed::Sealed for T {}

impl<T: Record> Element for T {
    fn dtype() -> Result<DType, DTypeError> {
        RecordType::new(T::fields()?, size_of::<T>()).map(DType::Record)
    }
}

/// A parsed Python literal: the subset NumPy's descr uses.
#[derive(Debug)]
enum Lit<'a> {
    Str(&'a str),
    Int(u64),
    List(Vec<Lit<'a>>),
    Tuple(Vec<Lit<'a>>),
}

/// Deepest nesting of brackets the parser reads (two per record level, plus shapes).
const MAX_LITERAL_DEPTH: usize = 2 * MAX_RECORD_DEPTH + 4;
/// Most literals the parser reads in one descr.
const MAX_LITERALS: usize = 8 * MAX_RECORD_FIELDS;

struct Parser<'a> {
    text: &'a str,
    at: usize,
    literals: usize,
}

impl<'a> Parser<'a> {
    fn skip_space(&mut self) {
        while self
            .text
            .as_bytes()
            .get(self.at)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            self.at += 1;
        }
    }

    fn error(&self, what: &str) -> String {
        format!("{what} at byte {}", self.at)
    }

    fn value(&mut self, depth: usize) -> Result<Lit<'a>, String> {
        self.literals += 1;
        if self.literals > MAX_LITERALS {
            return Err(format!("more than {MAX_LITERALS} values"));
        }
        self.skip_space();
        let bytes = self.text.as_bytes();
        match bytes.get(self.at) {
            Some(&q @ (b'\'' | b'"')) => {
                let start = self.at + 1;
                let len = bytes[start..]
                    .iter()
                    .position(|&b| b == q || b == b'\\')
                    .ok_or_else(|| self.error("unterminated string"))?;
                if bytes[start + len] == b'\\' {
                    self.at = start + len;
                    return Err(self.error("a backslash escape"));
                }
                self.at = start + len + 1;
                Ok(Lit::Str(&self.text[start..start + len]))
            }
            Some(b'0'..=b'9') => {
                let start = self.at;
                while bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
                    self.at += 1;
                }
                self.text[start..self.at]
                    .parse()
                    .map(Lit::Int)
                    .map_err(|_| format!("number {} is too large", &self.text[start..self.at]))
            }
            Some(&open @ (b'[' | b'(')) => {
                if depth >= MAX_LITERAL_DEPTH {
                    return Err(self.error("brackets nested too deep"));
                }
                let close = if open == b'[' { b']' } else { b')' };
                self.at += 1;
                let mut items = Vec::new();
                let mut trailing_comma = false;
                loop {
                    self.skip_space();
                    if bytes.get(self.at) == Some(&close) {
                        self.at += 1;
                        break;
                    }
                    if self.at >= bytes.len() {
                        return Err(self.error(&format!(
                            "unexpected end (a '{}' is missing)",
                            close as char
                        )));
                    }
                    if !items.is_empty() && !trailing_comma {
                        return Err(self.error(&format!("expected ',' or '{}'", close as char)));
                    }
                    items.push(self.value(depth + 1)?);
                    self.skip_space();
                    trailing_comma = bytes.get(self.at) == Some(&b',');
                    if trailing_comma {
                        self.at += 1;
                    }
                }
                Ok(if open == b'[' {
                    Lit::List(items)
                } else if items.len() == 1 && !trailing_comma {
                    // Python: `(x)` is just `x`.
                    items.pop().expect("one item")
                } else {
                    Lit::Tuple(items)
                })
            }
            Some(_) => Err(self.error("expected a string, a number, '[' or '('")),
            None => Err(self.error("unexpected end")),
        }
    }
}

/// Parses a record descr (a Python list literal, as `repr(dtype.descr)` prints it; either
/// quote, any spacing, trailing commas) into a record dtype.
pub(crate) fn parse_record(input: &str) -> Result<RecordType, DTypeError> {
    let bad = |reason: String| DTypeError::BadRecord {
        descr: abbreviate(input),
        reason,
    };
    if input.len() > 4 * MAX_DESCR_LEN {
        return Err(bad(format!(
            "{} bytes of text; at most {} are read",
            input.len(),
            4 * MAX_DESCR_LEN
        )));
    }
    let mut parser = Parser {
        text: input,
        at: 0,
        literals: 0,
    };
    let lit = parser.value(0).map_err(&bad)?;
    parser.skip_space();
    if parser.at != input.len() {
        return Err(bad(parser.error("unexpected text after the list")));
    }
    let Lit::List(entries) = lit else {
        return Err(bad(
            "a record descr is a list of (name, format) tuples".into()
        ));
    };
    record_from(&entries).map_err(|e| match e {
        DTypeError::BadRecord { reason, .. } => bad(reason),
        other => bad(other.to_string()),
    })
}

fn record_from(entries: &[Lit<'_>]) -> Result<RecordType, DTypeError> {
    let bad = |reason: String| DTypeError::BadRecord {
        descr: String::new(),
        reason,
    };
    let mut fields = Vec::new();
    let mut offset = 0usize;
    for entry in entries {
        let Lit::Tuple(parts) = entry else {
            return Err(bad(format!(
                "entry {entry:?} is not a (name, format) or (name, format, shape) tuple"
            )));
        };
        let (name, format, shape) = match parts.as_slice() {
            [n, f] => (n, f, None),
            [n, f, s] => (n, f, Some(s)),
            _ => {
                return Err(bad(format!(
                    "entry {entry:?} has {} items, not 2 or 3",
                    parts.len()
                )));
            }
        };
        let name = match name {
            Lit::Str(s) => *s,
            Lit::Tuple(_) => {
                return Err(bad("field titles ((title, name)) are not supported".into()));
            }
            other => return Err(bad(format!("field name {other:?} is not a string"))),
        };
        let dtype = match format {
            // A nested record is a list, never a quoted one (NumPy refuses that too).
            Lit::Str(s) if s.starts_with('[') => {
                return Err(bad(format!(
                    "field {name:?}: a nested record is a list of fields, not a string"
                )));
            }
            Lit::Str(s) => DType::parse(s).map_err(|e| bad(format!("field {name:?}: {e}")))?,
            Lit::List(nested) => DType::Record(record_from(nested).map_err(|e| match e {
                DTypeError::BadRecord { reason, .. } => bad(format!("in field {name:?}: {reason}")),
                other => other,
            })?),
            other => {
                return Err(bad(format!(
                    "field {name:?}: format {other:?} is not a string or a list"
                )));
            }
        };
        let shape = match shape {
            None => Vec::new(),
            Some(Lit::Int(n)) => vec![to_usize(*n)?],
            Some(Lit::Tuple(dims)) => dims
                .iter()
                .map(|d| match d {
                    Lit::Int(n) => to_usize(*n),
                    other => Err(bad(format!(
                        "field {name:?}: shape entry {other:?} is not a number"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(bad(format!(
                    "field {name:?}: shape {other:?} is not a tuple"
                )));
            }
        };
        if name.is_empty() {
            // NumPy's padding: an unnamed void entry, only advancing the offset.
            match (&dtype, shape.is_empty()) {
                (DType::Void(n), true) => {
                    offset = offset
                        .checked_add(*n as usize)
                        .ok_or_else(|| bad("too large".into()))?;
                    continue;
                }
                _ => {
                    return Err(bad(format!(
                        "an unnamed entry must be padding ('|Vn'), not {}",
                        dtype.descr()
                    )));
                }
            }
        }
        let field = RecordField {
            name: name.to_owned(),
            offset,
            dtype,
            shape,
        };
        offset = field
            .len()
            .and_then(|n| offset.checked_add(n))
            .filter(|&end| end <= MAX_ITEMSIZE)
            .ok_or_else(|| bad(format!("field {name:?} ends past {MAX_ITEMSIZE} bytes")))?;
        fields.push(field);
    }
    RecordType::new(fields, offset)
}

fn to_usize(n: u64) -> Result<usize, DTypeError> {
    usize::try_from(n)
        .ok()
        .filter(|&n| n <= MAX_ITEMSIZE)
        .ok_or_else(|| DTypeError::BadRecord {
            descr: String::new(),
            reason: format!("dimension {n} is larger than {MAX_ITEMSIZE}"),
        })
}

/// At most 120 characters of `text`, for an error message.
fn abbreviate(text: &str) -> String {
    match text.char_indices().nth(120) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}
