//! The TraffoFlex Kubernetes operator.
