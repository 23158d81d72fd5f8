//! `Channel::with_max_len` never panics and accepts exactly 1..=max bytes of `[A-Za-z0-9_:.-]`
//! (max capped at `MAX_CHANNEL_LEN`); `Channel::new` is the same with the default limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings::{Channel, DEFAULT_MAX_CHANNEL_LEN, MAX_CHANNEL_LEN};

fn documented(name: &str, max: usize) -> bool {
    (1..=max.min(MAX_CHANNEL_LEN)).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.'))
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the configured limit (1..=256, or past the ceiling for 255).
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let max = if first == 255 { usize::MAX } else { first as usize + 1 };
    // Lossy conversion keeps non-UTF-8 inputs useful: they become U+FFFD, which must be refused.
    let name = String::from_utf8_lossy(rest);
    for (max, result) in [
        (max, Channel::with_max_len(&name, max)),
        (DEFAULT_MAX_CHANNEL_LEN, Channel::new(&name)),
    ] {
        match result {
            Ok(channel) => {
                assert!(documented(&name, max), "accepted {name:?} (limit {max})");
                assert_eq!(channel.as_str(), name);
            }
            Err(e) => {
                assert!(!documented(&name, max), "refused {name:?} (limit {max}): {e}");
                let _ = e.to_string();
            }
        }
    }
});
