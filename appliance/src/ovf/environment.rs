//! Writing an OVF environment document (`ovf-env.xml`, DSP0243 section 11): what vSphere hands
//! the guest at deploy time, here for the boot test's `iso` transport CD and for `deploy-spec`'s
//! check of the values it writes. The guest's reader is `mt-agent ovfenv` (`guest::ovfenv`).
//! Pure: no I/O.

/// The OVF environment namespace (`oe:`), the contract's.
pub use mt_contract::deploy::OVF_ENV_NAMESPACE as NS_OE;

/// The document carrying `properties` (full keys, `<class>.<key>`, as vSphere names them), with a
/// PlatformSection naming `platform` when given.
pub fn render_environment(platform: Option<&str>, properties: &[(String, String)]) -> String {
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Environment xmlns=\"{NS_OE}\" xmlns:oe=\"{NS_OE}\" oe:id=\"\">\n"
    );
    if let Some(kind) = platform {
        x.push_str(&format!(
            "  <PlatformSection>\n    <Kind>{}</Kind>\n  </PlatformSection>\n",
            xml_escape(kind)
        ));
    }
    x.push_str("  <PropertySection>\n");
    for (key, value) in properties {
        x.push_str(&format!(
            "    <Property oe:key=\"{}\" oe:value=\"{}\"/>\n",
            xml_escape(key),
            xml_escape(value)
        ));
    }
    x.push_str("  </PropertySection>\n</Environment>\n");
    x
}

/// Escapes text for an attribute or element, including the white space an XML parser would
/// otherwise normalise to spaces in an attribute (so a line break arrives as a line break).
fn xml_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_white_space_kept_as_character_references() {
        let x = render_environment(
            Some("a<b"),
            &[("mt.p".into(), "fail&back <\"7\">\tx\ny".into())],
        );
        assert!(x.contains("<Kind>a&lt;b</Kind>"), "{x}");
        assert!(
            x.contains(
                "oe:key=\"mt.p\" oe:value=\"fail&amp;back &lt;&quot;7&quot;&gt;&#9;x&#10;y\""
            ),
            "{x}"
        );
        let doc = roxmltree::Document::parse(&x).unwrap();
        let p = doc
            .descendants()
            .find(|n| n.tag_name().name() == "Property")
            .unwrap();
        assert_eq!(
            p.attribute((NS_OE, "value")),
            Some("fail&back <\"7\">\tx\ny")
        );
        assert!(!render_environment(None, &[]).contains("PlatformSection"));
    }
}
