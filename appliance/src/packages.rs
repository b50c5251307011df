//! Package manifests (`packages/<base>.toml`): logical packages mapped to each base.
