//! The web widget's script: `widget/dist/embed.js`, built from `widget/src` with esbuild and
//! committed (`make test` fails when it is stale), embedded here so that the gateway serves it
//! and the operator puts its name and Subresource Integrity value into the snippet — the
//! same bytes in both, since they are built from one checkout.

use std::sync::LazyLock;

use base64::Engine;
use sha2::{Digest, Sha256, Sha384};

/// The script, as served.
pub const EMBED_JS: &[u8] = include_bytes!("../../../widget/dist/embed.js");

struct Script {
    path: String,
    integrity: String,
}

static SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    let name = hex(&Sha256::digest(EMBED_JS)[..8]);
    Script {
        path: format!("/widget/embed.{name}.js"),
        integrity: format!(
            "sha384-{}",
            base64::engine::general_purpose::STANDARD.encode(Sha384::digest(EMBED_JS))
        ),
    }
});

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Path of the script on the gateway, named by its content (`/widget/embed.<16 hex>.js`): a
/// new build has a new name, so it can be cached for a year.
pub fn script_path() -> &'static str {
    &SCRIPT.path
}

/// The script's Subresource Integrity value (`sha384-<base64>`).
pub fn integrity() -> &'static str {
    &SCRIPT.integrity
}

/// Path prefix of a channel's widget endpoints on the gateway (`data-channel-url`).
pub fn channel_path(channel: &str) -> String {
    format!("/widget/{channel}")
}

/// The `<script>` tag a site pastes into its pages, for the gateway at `base`
/// (`https://host`, no trailing slash) and `channel`.
pub fn snippet(base: &str, channel: &str) -> String {
    format!(
        r#"<script src="{base}{}" integrity="{}" crossorigin="anonymous" data-channel-url="{base}{}" async></script>"#,
        script_path(),
        integrity(),
        channel_path(channel)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_is_named_by_its_content_and_carries_its_integrity() {
        assert!(!EMBED_JS.is_empty());
        let p = script_path();
        assert!(p.starts_with("/widget/embed.") && p.ends_with(".js"), "{p}");
        assert_eq!(p.len(), "/widget/embed.".len() + 16 + 3);
        let sri = integrity().strip_prefix("sha384-").unwrap();
        let digest = base64::engine::general_purpose::STANDARD
            .decode(sri)
            .unwrap();
        assert_eq!(digest, Sha384::digest(EMBED_JS).to_vec());
        let s = snippet("https://chat.acme.example", "web");
        assert!(
            s.contains(r#"src="https://chat.acme.example/widget/embed."#),
            "{s}"
        );
        assert!(s.contains(r#"data-channel-url="https://chat.acme.example/widget/web""#));
        assert!(s.contains(&format!(r#"integrity="{}""#, integrity())));
        assert!(
            s.contains(r#"crossorigin="anonymous""#),
            "SRI across origins needs CORS"
        );
    }
}
