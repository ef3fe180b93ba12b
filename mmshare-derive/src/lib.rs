//! `#[derive(Record)]` for [mmshare](https://docs.rs/mmshare): makes a `#[repr(C)]` struct the
//! element of a record (NumPy structured) dtype.
//!
//! Use it through mmshare's `derive` feature, as `mmshare::Record`, next to bytemuck's `Pod`
//! and `Zeroable` (a record must be plain old data, with no implicit padding):
//!
//! ```
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, mmshare::Record)]
//! #[repr(C)]
//! struct Point {
//!     x: f32,
//!     y: f32,
//!     #[mmshare(rename = "id")]
//!     ident: u32,
//!     #[mmshare(padding)]
//!     _pad: [u8; 4],
//!     t: mmshare::DateTime64<mmshare::units::Nanos>,
//! }
//! // Point's dtype: [('x', '<f4'), ('y', '<f4'), ('id', '<u4'), ('', '|V4'), ('t', '<M8[ns]')]
//! ```
//!
//! The generated `Record::fields` lists every field but the padding ones, each with its name,
//! its offset (`core::mem::offset_of!`) and its type's dtype (arrays become subarray fields,
//! records nest). Attributes: `#[mmshare(rename = "...")]` names the field in the dtype,
//! `#[mmshare(padding)]` leaves it out (its bytes become the record's unnamed gap). Tuple
//! structs name their fields `f0`, `f1`, ... as NumPy does.
//!
//! The struct must be `#[repr(C)]` (so its layout is the same for every build that reads the
//! data) and not generic. Field names must be what NumPy and mmshare accept: printable ASCII
//! without `'` or `\`, 1 to 255 bytes, each once; the derive checks that at compile time.
//!
//! This compiles:
//!
//! ```
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, mmshare::Record)]
//! #[repr(C)]
//! struct Sample {
//!     #[mmshare(rename = "time stamp")]
//!     t: u64,
//!     v: [f32; 2],
//! }
//! use mmshare::Element;
//! assert_eq!(
//!     Sample::dtype().unwrap().descr(),
//!     "[('time stamp', '<u8'), ('v', '<f4', (2,))]"
//! );
//! ```
//!
//! and each of these is refused at compile time: without `#[repr(C)]`,
//!
//! ```compile_fail
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, mmshare::Record)]
//! #[repr(transparent)]
//! struct Sample { t: u64 }
//! ```
//!
//! a generic struct,
//!
//! ```compile_fail
//! #[derive(Clone, Copy, bytemuck::Zeroable, mmshare::Record)]
//! #[repr(C)]
//! struct Sample<T: Copy + 'static> { t: T }
//! ```
//!
//! a name NumPy's descr cannot hold, or one used twice,
//!
//! ```compile_fail
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, mmshare::Record)]
//! #[repr(C)]
//! struct Sample {
//!     #[mmshare(rename = "it's")]
//!     t: u64,
//! }
//! ```
//!
//! ```compile_fail
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, mmshare::Record)]
//! #[repr(C)]
//! struct Sample {
//!     #[mmshare(rename = "v")]
//!     t: u64,
//!     v: u64,
//! }
//! ```
//!
//! alignment beyond 8 bytes (elements are placed at most 8-byte aligned),
//!
//! ```compile_fail
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, mmshare::Record)]
//! #[repr(C, align(16))]
//! struct Sample {
//!     t: [u64; 2],
//! }
//! ```
//!
//! a field type that is no dtype,
//!
//! ```compile_fail
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, mmshare::Record)]
//! #[repr(C)]
//! struct Sample {
//!     t: usize,
//! }
//! ```
//!
//! and a struct with implicit padding (bytemuck's `Pod` refuses it; mark it explicitly):
//!
//! ```compile_fail
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, mmshare::Record)]
//! #[repr(C)]
//! struct Sample {
//!     a: u32,
//!     t: u64,
//! }
//! ```

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::{Data, DeriveInput, Fields, LitStr, parse_macro_input, spanned::Spanned};

/// Implements `mmshare::Record` for a `#[repr(C)]` struct. See the crate documentation.
#[proc_macro_derive(Record, attributes(mmshare))]
pub fn derive_record(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let name = &input.ident;
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            input.generics.span(),
            "#[derive(Record)] does not support generic structs: a record's layout must be one fixed dtype",
        ));
    }
    check_repr_c(input)?;
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new(
            Span::call_site(),
            "#[derive(Record)] is for structs only",
        ));
    };
    let mut entries = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let fields: Vec<_> = match &data.fields {
        Fields::Named(f) => f.named.iter().collect(),
        Fields::Unnamed(f) => f.unnamed.iter().collect(),
        Fields::Unit => Vec::new(),
    };
    for (i, field) in fields.into_iter().enumerate() {
        let options = FieldOptions::parse(field)?;
        if options.padding {
            continue;
        }
        let member = match &field.ident {
            Some(ident) => quote!(#ident),
            None => {
                let index = syn::Index::from(i);
                quote!(#index)
            }
        };
        let (dtype_name, span) = match (&options.rename, &field.ident) {
            (Some(lit), _) => (lit.value(), lit.span()),
            (None, Some(ident)) => {
                let text = ident.to_string();
                (
                    text.strip_prefix("r#").unwrap_or(&text).to_owned(),
                    ident.span(),
                )
            }
            (None, None) => (format!("f{i}"), field.span()),
        };
        check_name(&dtype_name, span)?;
        if !seen.insert(dtype_name.clone()) {
            return Err(syn::Error::new(
                span,
                format!("two fields are named {dtype_name:?} in the dtype"),
            ));
        }
        let ty = &field.ty;
        entries.push(quote! {
            ::mmshare::RecordField::of::<#ty>(#dtype_name, ::core::mem::offset_of!(#name, #member))?
        });
    }
    if entries.is_empty() {
        return Err(syn::Error::new(
            Span::call_site(),
            "#[derive(Record)] needs at least one field that is not padding",
        ));
    }
    Ok(quote! {
        impl ::mmshare::Record for #name {
            fn fields() -> ::core::result::Result<
                ::std::vec::Vec<::mmshare::RecordField>,
                ::mmshare::DTypeError,
            > {
                ::core::result::Result::Ok(::std::vec![#(#entries),*])
            }
        }
    })
}

/// The struct must say `#[repr(C)]` (possibly with `packed` or `align`).
fn check_repr_c(input: &DeriveInput) -> syn::Result<()> {
    let mut c = false;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("repr")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("C") {
                c = true;
            } else if meta.path.is_ident("align") {
                // Typed handles place elements at most 8-byte aligned (frames and data start
                // on pages, elements follow one another): more would fail at every open.
                let content;
                syn::parenthesized!(content in meta.input);
                let n: syn::LitInt = content.parse()?;
                if n.base10_parse::<u64>()? > 8 {
                    return Err(meta.error(
                        "#[derive(Record)] takes alignment up to 8: mmshare places elements at most 8-byte aligned",
                    ));
                }
            } else if meta.input.peek(syn::token::Paren) {
                // `packed(N)`: allowed beside C.
                let _args: TokenStream2 = meta.input.parse()?;
            }
            Ok(())
        })?;
    }
    if c {
        Ok(())
    } else {
        Err(syn::Error::new(
            input.ident.span(),
            "#[derive(Record)] needs #[repr(C)]: a record's field order and offsets must not depend on the compiler",
        ))
    }
}

#[derive(Default)]
struct FieldOptions {
    padding: bool,
    rename: Option<LitStr>,
}

impl FieldOptions {
    fn parse(field: &syn::Field) -> syn::Result<FieldOptions> {
        let mut options = FieldOptions::default();
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("mmshare")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("padding") {
                    options.padding = true;
                    Ok(())
                } else if meta.path.is_ident("rename") {
                    options.rename = Some(meta.value()?.parse()?);
                    Ok(())
                } else {
                    Err(meta.error("expected `padding` or `rename = \"...\"`"))
                }
            })?;
        }
        if options.padding && options.rename.is_some() {
            return Err(syn::Error::new(
                field.span(),
                "a padding field has no name to rename",
            ));
        }
        Ok(options)
    }
}

/// The names mmshare's record dtypes accept (`mmshare::RecordType::new` checks the same).
fn check_name(name: &str, span: Span) -> syn::Result<()> {
    let fault = if name.is_empty() {
        Some("is empty".to_owned())
    } else if name.len() > 255 {
        Some(format!("is {} bytes; at most 255 are allowed", name.len()))
    } else {
        name.chars()
            .find(|&c| !(' '..='~').contains(&c) || c == '\'' || c == '\\')
            .map(|c| format!("holds {c:?}: names are printable ASCII without ' or \\"))
    };
    match fault {
        Some(fault) => Err(syn::Error::new(
            span,
            format!("field name {name:?} {fault} (use #[mmshare(rename = \"...\")])"),
        )),
        None => Ok(()),
    }
}
