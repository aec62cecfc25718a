//! Widget session tokens come from browsers: arbitrary strings never panic and are never
//! accepted unless they carry a valid MAC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xin_gateway_input::session::check_session;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        assert_eq!(check_session(b"fuzz-key", "web", token, 0), None);
    }
});
