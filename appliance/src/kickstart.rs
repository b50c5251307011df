//! Rendering the CentOS 6.6 kickstart from the templates in `kickstart/`.

use crate::Definition;

/// Renders `ks.cfg` for the definition.
pub fn render(_def: &Definition) -> anyhow::Result<String> {
    anyhow::bail!("kickstart rendering is not built yet")
}
