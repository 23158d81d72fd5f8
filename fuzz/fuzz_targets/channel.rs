//! `Channel::new` never panics and accepts exactly 1..=128 bytes of `[A-Za-z0-9_:.-]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings::{Channel, MAX_CHANNEL_LEN};

fn documented(name: &str) -> bool {
    (1..=MAX_CHANNEL_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.'))
}

fuzz_target!(|data: &[u8]| {
    // Lossy conversion keeps non-UTF-8 inputs useful: they become U+FFFD, which must be refused.
    let name = String::from_utf8_lossy(data);
    match Channel::new(&name) {
        Ok(channel) => {
            assert!(documented(&name), "accepted a name outside the documented set: {name:?}");
            assert_eq!(channel.as_str(), name);
        }
        Err(e) => {
            assert!(!documented(&name), "refused a documented name {name:?}: {e}");
            let _ = e.to_string();
        }
    }
});
