//! The portal's tiles and how they are laid out: pinned stores first, then the recently opened,
//! then the rest (optionally grouped by a tag kind such as `brand` or `region`), each tile
//! marked hidden when it does not match the search.
//!
//! Pure functions over the grants the policy already returned: nothing here decides access.

use std::collections::BTreeMap;

use super::portal_prefs::Prefs;
use crate::config::{Logo, Store};

pub struct Tile {
    pub id: String,
    pub name: String,
    pub role: String,
    pub description: Option<String>,
    pub launch_url: String,
    pub expires: Option<String>,
    /// The logo's `src` (an https URL or the gateway's own `/static/logos/...`).
    pub logo: Option<String>,
    /// Shown instead of a logo: "US" for "US Storefront".
    pub initials: String,
    /// One of six background colours, stable per store id.
    pub hue: u8,
    /// `kind:value` tags, as "value" per kind, for grouping.
    pub tags: Vec<String>,
    /// Lower-case text the search matches (name, description, role, tags, id).
    pub search: String,
    pub pinned: bool,
    /// The gateway's `/control-panel/{account}` entry when the person holds a control-panel
    /// grant for this store's hash (issue 12); the template shows "Control panel" when set.
    pub control_panel: Option<String>,
    /// Hidden by the current search (still in the page, so typing can show it again).
    pub hidden: bool,
}

impl Tile {
    pub fn new(store: &Store, role: &str, expires: Option<String>) -> Tile {
        let logo = store.logo.as_ref().map(|l| match l {
            Logo::Url(u) => u.to_string(),
            Logo::Svg(_) => format!("/static/logos/{}.svg", store.id),
        });
        let mut search = format!("{} {} {}", store.name, role, store.id);
        if let Some(d) = &store.description {
            search.push(' ');
            search.push_str(d);
        }
        for t in &store.tags {
            search.push(' ');
            search.push_str(t);
        }
        Tile {
            id: store.id.to_string(),
            name: store.name.clone(),
            role: role.to_owned(),
            description: store.description.clone(),
            launch_url: format!("/stores/{}/launch", store.id),
            expires,
            logo,
            initials: initials(&store.name),
            hue: hue(store.id.as_str()),
            tags: store.tags.clone(),
            search: search.to_lowercase(),
            pinned: false,
            control_panel: None,
            hidden: false,
        }
    }

    /// The value of this tile's `kind:value` tag, if it has one.
    pub fn tag_value(&self, kind: &str) -> Option<&str> {
        self.tags.iter().find_map(|t| {
            t.split_once(':')
                .filter(|(k, _)| *k == kind)
                .map(|(_, v)| v)
        })
    }
}

/// "US" for "US Storefront", "EO" for "eu-outlet", "S" for "shop": at most two letters.
pub fn initials(name: &str) -> String {
    name.split(|c: char| c.is_whitespace() || c == '-' || c == '_')
        .filter_map(|w| w.chars().find(|c| c.is_alphanumeric()))
        .take(2)
        .flat_map(char::to_uppercase)
        .collect()
}

fn hue(id: &str) -> u8 {
    (id.bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 6) as u8
}

/// Whether every word of `query` occurs in the tile's text (case-insensitive).
pub fn matches(tile: &Tile, query: &str) -> bool {
    query
        .to_lowercase()
        .split_whitespace()
        .all(|w| tile.search.contains(w))
}

/// The tag kinds (`brand`, `region`) the tiles can be grouped by, sorted.
pub fn group_kinds(tiles: &[Tile]) -> Vec<String> {
    let mut kinds: Vec<String> = tiles
        .iter()
        .flat_map(|t| t.tags.iter())
        .filter_map(|t| t.split_once(':').map(|(k, _)| k.to_owned()))
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

pub struct Section {
    /// `id` of the heading, for `aria-labelledby`.
    pub key: String,
    pub heading: String,
    pub tiles: Vec<Tile>,
}

impl Section {
    pub fn all_hidden(&self) -> bool {
        self.tiles.iter().all(|t| t.hidden)
    }
}

/// Pinned (in pin order), recently opened (most recent first), then the rest by name, or by
/// `group_by`'s tag value (stores without that tag last, under "Other"). Empty sections are left
/// out; tiles not matching `query` are kept but hidden.
pub fn arrange(
    mut tiles: Vec<Tile>,
    prefs: &Prefs,
    query: &str,
    group_by: Option<&str>,
) -> Vec<Section> {
    for t in &mut tiles {
        t.pinned = prefs.pinned.contains(&t.id);
        t.hidden = !matches(t, query);
    }
    tiles.sort_by_key(|t| t.name.to_lowercase());
    let take = |tiles: &mut Vec<Tile>, ids: &[String]| -> Vec<Tile> {
        ids.iter()
            .filter_map(|id| {
                let at = tiles.iter().position(|t| &t.id == id)?;
                Some(tiles.remove(at))
            })
            .collect()
    };
    let pinned = take(&mut tiles, &prefs.pinned);
    let recent = take(&mut tiles, &prefs.recent);
    let mut sections = vec![
        Section {
            key: "pinned".into(),
            heading: "Pinned".into(),
            tiles: pinned,
        },
        Section {
            key: "recent".into(),
            heading: "Recently opened".into(),
            tiles: recent,
        },
    ];
    match group_by {
        Some(kind) => {
            let mut groups: BTreeMap<String, Vec<Tile>> = BTreeMap::new();
            let mut other = Vec::new();
            for t in tiles {
                match t.tag_value(kind).map(str::to_owned) {
                    Some(v) => groups.entry(v).or_default().push(t),
                    None => other.push(t),
                }
            }
            for (i, (value, tiles)) in groups.into_iter().enumerate() {
                sections.push(Section {
                    key: format!("group-{i}"),
                    heading: format!("{}: {value}", capitalise(kind)),
                    tiles,
                });
            }
            sections.push(Section {
                key: "other".into(),
                heading: format!("Other stores (no {kind})"),
                tiles: other,
            });
        }
        None => {
            let heading = if sections.iter().all(|s| s.tiles.is_empty()) {
                "All your stores"
            } else {
                "Other stores"
            };
            sections.push(Section {
                key: "all".into(),
                heading: heading.into(),
                tiles,
            });
        }
    }
    sections.retain(|s| !s.tiles.is_empty());
    sections
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(id: &str, name: &str, tags: &[&str]) -> Tile {
        Tile {
            id: id.into(),
            name: name.into(),
            role: "merchandiser".into(),
            description: None,
            launch_url: format!("/stores/{id}/launch"),
            expires: None,
            logo: None,
            initials: initials(name),
            hue: hue(id),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            search: format!("{name} {id} {}", tags.join(" ")).to_lowercase(),
            pinned: false,
            control_panel: None,
            hidden: false,
        }
    }

    fn ids(s: &Section) -> Vec<&str> {
        s.tiles.iter().map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn initials_take_the_first_two_words() {
        assert_eq!(initials("US Storefront"), "US");
        assert_eq!(initials("eu-outlet"), "EO");
        assert_eq!(initials("shop"), "S");
        assert_eq!(initials("  (Outlet) north "), "ON");
        assert_eq!(initials(""), "");
    }

    #[test]
    fn pinned_then_recent_then_the_rest_by_name() {
        let tiles = vec![
            tile("c", "Charlie", &[]),
            tile("a", "alpha", &[]),
            tile("b", "Bravo", &[]),
            tile("d", "Delta", &[]),
        ];
        let prefs = Prefs {
            pinned: vec!["d".into(), "gone".into()],
            recent: vec!["b".into(), "d".into()],
        };
        let s = arrange(tiles, &prefs, "", None);
        let heads: Vec<&str> = s.iter().map(|s| s.heading.as_str()).collect();
        assert_eq!(heads, ["Pinned", "Recently opened", "Other stores"]);
        assert_eq!(ids(&s[0]), ["d"]);
        assert!(s[0].tiles[0].pinned);
        assert_eq!(ids(&s[1]), ["b"], "a pinned store is not repeated");
        assert_eq!(ids(&s[2]), ["a", "c"]);
    }

    #[test]
    fn without_preferences_one_section() {
        let s = arrange(vec![tile("a", "A", &[])], &Prefs::default(), "", None);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].heading, "All your stores");
    }

    #[test]
    fn search_hides_what_does_not_match_every_word() {
        let tiles = vec![
            tile("us", "US Storefront", &["region:na"]),
            tile("eu", "EU Storefront", &["region:eu"]),
            tile("outlet", "Outlet", &[]),
        ];
        let s = arrange(tiles, &Prefs::default(), "  STORE eu ", None);
        let shown: Vec<&str> = s[0]
            .tiles
            .iter()
            .filter(|t| !t.hidden)
            .map(|t| t.id.as_str())
            .collect();
        assert_eq!(shown, ["eu"]);
        assert_eq!(s[0].tiles.len(), 3, "hidden tiles stay for the script");
    }

    #[test]
    fn grouping_by_a_tag_kind() {
        let tiles = vec![
            tile("us", "US", &["region:na", "brand:acme"]),
            tile("eu", "EU", &["region:eu"]),
            tile("ca", "CA", &["region:na"]),
            tile("x", "Loose", &["outlet"]),
        ];
        assert_eq!(group_kinds(&tiles), ["brand", "region"]);
        let s = arrange(tiles, &Prefs::default(), "", Some("region"));
        let heads: Vec<&str> = s.iter().map(|s| s.heading.as_str()).collect();
        assert_eq!(
            heads,
            ["Region: eu", "Region: na", "Other stores (no region)"]
        );
        assert_eq!(ids(&s[1]), ["ca", "us"]);
        assert_eq!(ids(&s[2]), ["x"]);
    }
}
