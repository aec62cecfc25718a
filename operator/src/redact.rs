//! `Debug` for what holds secret values (Secrets being built or read, keys, URLs with
//! passwords): names and keys are shown, values never, so a `?value` in a log line or a panic
//! message cannot leak one.

use k8s_openapi::api::core::v1::Secret;

/// A Secret as `Debug` shows it: its namespace, name and data keys.
pub struct SecretNames<'a>(pub &'a Secret);

impl std::fmt::Debug for SecretNames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.0.metadata;
        f.debug_struct("Secret")
            .field("namespace", &m.namespace)
            .field("name", &m.name)
            .field(
                "keys",
                &self
                    .0
                    .data
                    .iter()
                    .flat_map(|d| d.keys())
                    .chain(self.0.string_data.iter().flat_map(|d| d.keys()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Several Secrets, each as [`SecretNames`].
pub struct SecretList<'a>(pub &'a [Secret]);

impl std::fmt::Debug for SecretList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(SecretNames))
            .finish()
    }
}

/// A secret value's place in a `Debug` output: whether there is one, never what it is.
pub fn value<T: AsRef<[u8]>>(v: &T) -> &'static str {
    if v.as_ref().is_empty() {
        "<empty>"
    } else {
        "<redacted>"
    }
}
