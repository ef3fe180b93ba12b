//! The C API from Rust: the generated header is the committed one, no panic crosses the
//! boundary, and NULL or closed handles are refused without touching memory. The C programs
//! themselves (compiled with the system `cc`) run in tests/python/test_c_api.py.

use super::*;

#[test]
fn header_is_up_to_date() {
    let crate_dir = env!("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(format!("{crate_dir}/cbindgen.toml"))
        .expect("cbindgen.toml parses");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(format!("{crate_dir}/src/lib.rs"))
        .generate()
        .expect("the header generates")
        .write(&mut generated);
    let path = format!("{crate_dir}/include/mmshare.h");
    if std::env::var_os("MMSHARE_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("header written");
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/mmshare.h is not what cbindgen makes from src/lib.rs; regenerate it with \
         `MMSHARE_BLESS=1 cargo test -p mmshare-c header` and commit it"
    );
}

fn last_error() -> String {
    // SAFETY: mms_last_error returns a NUL-terminated string owned by this thread.
    unsafe { CStr::from_ptr(mms_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_panic_becomes_mms_err_internal_with_its_message() {
    let status = ffi(|| panic!("the sky fell at {}", 42));
    assert_eq!(status, MMS_ERR_INTERNAL);
    let message = last_error();
    assert!(
        message.contains("the sky fell at 42") && message.contains("bug"),
        "{message}"
    );
    assert_eq!(ffi(|| panic!("static text")), MMS_ERR_INTERNAL);
    assert!(last_error().contains("static text"));
    // A failure keeps its own status and message; success leaves the last message alone.
    assert_eq!(
        ffi(|| Err(Failure::new(MMS_ERR_BUSY, "taken"))),
        MMS_ERR_BUSY
    );
    assert_eq!(ffi(|| Ok(())), MMS_OK);
    assert_eq!(last_error(), "taken");
}

#[test]
fn null_and_closed_handles_are_refused() {
    let mut out = std::ptr::null_mut();
    let mut info = std::mem::MaybeUninit::<mms_info>::uninit();
    // SAFETY: NULL or live handles and valid out-pointers, as the API allows.
    unsafe {
        assert_eq!(
            mms_stat(std::ptr::null_mut(), c"x".as_ptr(), info.as_mut_ptr()),
            MMS_ERR_INVALID_ARGUMENT
        );
        assert!(
            last_error().contains("client handle is NULL"),
            "{}",
            last_error()
        );
        // A handle as `mms_client_close` leaves it (no daemon needed to make one).
        let closed: *mut mms_client = Box::into_raw(Box::new(mms_client(None)));
        mms_client_close(closed);
        assert_eq!(
            mms_open_array(closed, c"x".as_ptr(), std::ptr::null(), false, &mut out),
            MMS_ERR_CLOSED
        );
        assert!(last_error().contains("client handle was closed"));
        mms_client_free(closed);
        let array: *mut mms_array = Box::into_raw(Box::new(mms_array(None)));
        let mut buf = [0u8; 8];
        assert_eq!(
            mms_array_read(array, buf.as_mut_ptr().cast(), 8, std::ptr::null_mut()),
            MMS_ERR_CLOSED
        );
        assert_eq!(
            mms_array_commit(array, std::ptr::null_mut()),
            MMS_ERR_CLOSED
        );
        mms_array_free(array);
        let mut sample = std::ptr::null_mut();
        assert_eq!(
            mms_receive(std::ptr::null_mut(), 0, &mut sample),
            MMS_ERR_INVALID_ARGUMENT
        );
        assert!(sample.is_null());
        mms_sample_release(std::ptr::null_mut());
        mms_subscriber_free(std::ptr::null_mut());
        mms_publisher_free(std::ptr::null_mut());
    }
}

#[test]
fn bad_strings_shapes_and_flags_say_what_was_wrong() {
    // SAFETY: a valid C string, and NULL.
    unsafe {
        assert!(text(c"ok".as_ptr(), "name").is_ok());
        let e = text(std::ptr::null(), "name").expect_err("NULL is refused");
        assert_eq!(
            (e.code, e.message.as_str()),
            (MMS_ERR_INVALID_ARGUMENT, "name is NULL")
        );
        let e = text(c"\xff".as_ptr(), "dtype").expect_err("not UTF-8");
        assert_eq!(e.message, "dtype is not UTF-8");
        let e = dims(std::ptr::null(), 2).expect_err("NULL shape");
        assert_eq!(e.message, "shape is NULL with ndim 2");
        let e = dims([1u64; 40].as_ptr(), 33).expect_err("too many dimensions");
        assert_eq!(e.message, "ndim is 33; at most 32");
        assert_eq!(dims(std::ptr::null(), 0).ok().map(<[u64]>::len), Some(0));
    }
    let e = create_flags(0x10 | MMS_CREATE_MEMORY).expect_err("unknown flag");
    assert_eq!(e.message, "unknown create flags 0x10");
    assert!(matches!(
        create_flags(MMS_CREATE_MEMORY | MMS_CREATE_ORDER_F | MMS_CREATE_EXIST_OK),
        Ok((Backing::Memory, Order::F, true))
    ));
    assert_eq!(limit(-1), None);
    assert_eq!(limit(0), Some(Duration::ZERO));
    assert_eq!(limit(1500), Some(Duration::from_millis(1500)));
}

/// The header's version macros are the crate's version (cbindgen needs literals, so they are
/// written out: this catches a release that forgets them), and `mms_version` says the same.
#[test]
fn the_version_macros_and_functions_are_the_crates_version() {
    let version = format!("{MMS_VERSION_MAJOR}.{MMS_VERSION_MINOR}.{MMS_VERSION_PATCH}");
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    // SAFETY: mms_version returns a static NUL-terminated string.
    let from_c = unsafe { CStr::from_ptr(mms_version()) };
    assert_eq!(from_c.to_str().unwrap(), version);
    assert_eq!(mms_version_number(), MMS_VERSION_NUMBER);
    assert_eq!(
        MMS_VERSION_NUMBER,
        MMS_VERSION_MAJOR * 10_000 + MMS_VERSION_MINOR * 100 + MMS_VERSION_PATCH
    );
}
