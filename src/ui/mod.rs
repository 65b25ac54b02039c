//! The dashboard: state folded from events, pure drawing, keys, terminal set-up.
