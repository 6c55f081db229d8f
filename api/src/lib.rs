//! The TraffoFlex admin and automation API.
