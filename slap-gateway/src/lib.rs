//! Placeholder: see DESIGN.md for what this crate will own.
