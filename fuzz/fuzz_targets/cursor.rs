//! `Cursor::parse` never panics; an accepted cursor prints as text that parses back to the same
//! cursor, and that text is safe in an SSE `id:` line (no CR, LF or NUL).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings::{Cursor, MAX_CURSOR_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cursor) = Cursor::parse(text) else {
        return;
    };
    let printed = cursor.to_string();
    assert!(
        !printed.contains(['\r', '\n', '\0']),
        "cursor prints a line break or NUL: {printed:?}"
    );
    // Printing normalises (e.g. leading zeros in ids), so it is never longer than the input.
    assert!(printed.len() <= text.len().max(MAX_CURSOR_LEN));
    let again = Cursor::parse(&printed).expect("a printed cursor parses");
    assert_eq!(again, cursor, "round trip changed the cursor: {text:?} -> {printed:?}");
    assert_eq!(again.to_string(), printed, "printing is not stable");
});
