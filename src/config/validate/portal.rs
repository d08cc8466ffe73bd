//! Validation of what the portal shows of a store: `logo` (an `https://` image URL or an SVG file
//! the gateway serves) and the `tags` it groups tiles by (`brand:acme`, `region:eu`).

use std::path::Path;
use std::sync::Arc;

use url::Url;

use super::super::Logo;
use super::super::diag::{Seg, render_path};
use super::Checker;

/// The largest logo file: a tile picture, not a photograph (every logo is held in memory).
pub(crate) const MAX_LOGO_BYTES: usize = 64 * 1024;

pub(super) fn store_logo(c: &mut Checker<'_>, path: &[Seg], raw: &str) -> Option<Logo> {
    let name = render_path(path);
    if raw.contains("://") {
        return match Url::parse(raw) {
            Ok(u) if u.scheme() == "https" && u.host().is_some() => Some(Logo::Url(u)),
            Ok(_) | Err(_) => {
                c.error(
                    path,
                    format!("`{name}`: \"{raw}\" must be an https:// URL (a plain http image would be blocked as mixed content) or the path of an .svg file"),
                );
                None
            }
        };
    }
    if !raw.to_ascii_lowercase().ends_with(".svg") {
        c.error(
            path,
            format!("`{name}`: \"{raw}\" is neither an https:// URL nor an .svg file; convert the logo to SVG or host it over https"),
        );
        return None;
    }
    let text = match c.env.read_file(Path::new(raw)) {
        Ok(t) => t,
        Err(e) => {
            c.error(
                path,
                format!("`{name}`: cannot read {raw}: {e} (relative paths start at the configuration file's folder)"),
            );
            return None;
        }
    };
    if text.len() > MAX_LOGO_BYTES {
        c.error(
            path,
            format!(
                "`{name}`: {raw} is {} bytes, more than the {MAX_LOGO_BYTES} a tile logo may have; simplify or minify it",
                text.len()
            ),
        );
        return None;
    }
    if !text.contains("<svg") {
        c.error(
            path,
            format!("`{name}`: {raw} is not an SVG document (no <svg> element)"),
        );
        return None;
    }
    Some(Logo::Svg(Arc::from(text)))
}

/// Tags are free words (`outlet`) or `kind:value` pairs (`brand:acme`, `region:eu`) the portal
/// groups tiles by; a pair with an empty side would make a nameless group.
pub(super) fn store_tags(c: &mut Checker<'_>, path: &[Seg], tags: &[String]) {
    let name = render_path(path);
    for t in tags {
        let bad = t.trim().is_empty()
            || t.trim() != t
            || t.split_once(':')
                .is_some_and(|(k, v)| k.is_empty() || v.is_empty() || v.contains(':'));
        if bad {
            c.error(
                path,
                format!("`{name}`: tag {t:?} must be a word or `kind:value` (e.g. \"brand:acme\", \"region:eu\"), without spaces around it"),
            );
        }
    }
}
