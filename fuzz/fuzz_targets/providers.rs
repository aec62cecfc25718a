//! Every provider parser on arbitrary bytes: never a panic, and every message it returns
//! carries its provider's id prefix (the inbox's idempotency key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xin_gateway_input::providers::{instagram, telegram, whatsapp};

fuzz_target!(|data: &[u8]| {
    for (prefix, parsed) in [("tg:", telegram(data)), ("wa:", whatsapp(data)), ("ig:", instagram(data))] {
        if let Ok(messages) = parsed {
            for m in messages {
                assert!(m.provider_message_id.starts_with(prefix));
            }
        }
    }
});
