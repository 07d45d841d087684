//! The one error type of every decoder in this crate.

/// Why a document was refused. Every variant says where (a byte offset into the input)
/// when there is a where; `Display` is a sentence fit for a 400 response body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("document is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("elements nested deeper than {limit} levels at byte {offset}")]
    TooDeep { limit: usize, offset: usize },
    #[error("more than {limit} elements in the document (at byte {offset})")]
    TooManyElements { limit: usize, offset: usize },
    /// The `<reference>` elements of a marshalled document would make it grow past
    /// [`crate::Limits::max_expanded_bytes`]; `offset` is the reference (or the referenced
    /// container, for the copy kept of it) at which the limit was crossed. Raised before
    /// the copy is made.
    #[error("references expand the document beyond the limit of {limit} bytes at byte {offset}")]
    ExpandedTooLarge { limit: usize, offset: usize },
    #[error("malformed XML at byte {offset}: {message}")]
    Syntax { offset: usize, message: String },
    #[error("unexpected {found} at byte {offset}, expected {expected}")]
    Unexpected {
        offset: usize,
        found: String,
        expected: String,
    },
    #[error("invalid {what} at byte {offset}: {message}")]
    Invalid {
        what: &'static str,
        offset: usize,
        message: String,
    },
    /// A well-formed value of the wrong shape for the typed object asked for. There is no
    /// offset: the check runs on a value that was already decoded.
    #[error("invalid {what}: {message}")]
    Shape { what: &'static str, message: String },
}
