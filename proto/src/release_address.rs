//! The address of a published release (served by the group's gateways, installed by
//! nodes): `<gateway>/software/<sha256 of its manifest>/software.toml`, its artifacts
//! beside it under the relative URLs the manifest gives them. The digest in the address
//! makes it content-addressed: any gateway of the group serves the same bytes under it,
//! and a node checks the manifest against it.

/// The manifest's name under a release's address.
pub const MANIFEST: &str = "software.toml";

/// Whether `s` is a sha256 as addresses name manifests and blobs (64 lowercase hex
/// digits: one name per content).
pub fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `<base>/software/<manifest_sha256>/software.toml` (`base`: a gateway's URL, with or
/// without its trailing slash).
pub fn release_url(base: &str, manifest_sha256: &str) -> String {
    format!(
        "{}/software/{manifest_sha256}/{MANIFEST}",
        base.trim_end_matches('/')
    )
}

/// The manifest digest of an address made by [`release_url`] (whatever gateway it
/// names), else None: two such addresses with one digest name the same release.
pub fn content_address(url: &str) -> Option<&str> {
    let rest = url.strip_suffix(MANIFEST)?.strip_suffix('/')?;
    let (before, digest) = rest.rsplit_once('/')?;
    (before.ends_with("/software") && is_digest(digest)).then_some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_addresses_name_the_manifest_digest_whatever_the_gateway() {
        let sha = "a".repeat(64);
        let a = release_url("https://[fd00::1]:8443/", &sha);
        assert_eq!(
            a,
            format!("https://[fd00::1]:8443/software/{sha}/software.toml")
        );
        assert_eq!(content_address(&a), Some(sha.as_str()));
        assert_eq!(
            content_address(&release_url("https://gw/slap", &sha)),
            Some(sha.as_str())
        );
        assert_eq!(content_address("https://h/x/software.toml"), None);
        assert_eq!(
            content_address(&format!("https://h/other/{sha}/software.toml")),
            None
        );
        assert_eq!(
            content_address(&format!(
                "https://h/software/{}/software.toml",
                sha.to_uppercase()
            )),
            None
        );
    }
}
