//! Bounds that every decoder enforces before it allocates in proportion to its input.

/// Limits on one document. A decoder checks `max_bytes` before parsing, and counts depth
/// and elements while parsing, so memory and time stay proportional to the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted document, in bytes.
    pub max_bytes: usize,
    /// Deepest accepted element nesting (the root element is depth 1).
    pub max_depth: usize,
    /// Most elements accepted in one document.
    pub max_elements: usize,
    /// Largest accepted size of a marshalled document once its `<reference>` elements are
    /// resolved, in bytes: the document itself plus every copy of a referenced container
    /// the decoder has to make (the one it keeps to resolve references and one per
    /// reference), each costing the container's own bytes plus what the references inside
    /// it expand to. Checked before any copy is made. A document without references costs
    /// its own size, so with `max_expanded_bytes >= max_bytes` (every preset) this limit
    /// only ever refuses references. Instance XML and journals expand nothing (no
    /// references, no DTD, no custom entities) and ignore it.
    pub max_expanded_bytes: usize,
}

impl Limits {
    /// Room for a `getFullComputerInformation` of several thousand partitions (the
    /// captures show about 2 KB per allocated partition), far deeper than any SLAP value.
    /// References (none in any captured exchange) may at most double what a document of
    /// the largest size costs.
    pub const DEFAULT: Limits = Limits {
        max_bytes: 32 * 1024 * 1024,
        max_depth: 64,
        max_elements: 2_000_000,
        max_expanded_bytes: 64 * 1024 * 1024,
    };

    /// For small form fields such as `state` or `shared_xml`.
    pub const SMALL: Limits = Limits {
        max_bytes: 64 * 1024,
        max_depth: 16,
        max_elements: 4096,
        max_expanded_bytes: 128 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::Limits;

    #[test]
    fn presets_let_documents_without_references_through() {
        for limits in [Limits::DEFAULT, Limits::SMALL] {
            assert!(limits.max_expanded_bytes >= limits.max_bytes, "{limits:?}");
        }
    }
}
