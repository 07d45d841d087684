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
}

impl Limits {
    /// Room for a `getFullComputerInformation` of several thousand partitions (the
    /// captures show about 2 KB per allocated partition), far deeper than any SLAP value.
    pub const DEFAULT: Limits = Limits {
        max_bytes: 32 * 1024 * 1024,
        max_depth: 64,
        max_elements: 2_000_000,
    };

    /// For small form fields such as `state` or `shared_xml`.
    pub const SMALL: Limits = Limits {
        max_bytes: 64 * 1024,
        max_depth: 16,
        max_elements: 4096,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
