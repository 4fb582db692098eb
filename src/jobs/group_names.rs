//! No look-alike groups by message: a group name a message brings may not hide characters, and
//! may not read like one of Metabase's built-in groups without being it.
//!
//! Metabase compares group names only case-insensitively (`check-name-not-already-taken`,
//! ../shared/metabase-api.md §2), so `Administrators` with a zero-width space, a Cyrillic `А` or a
//! doubled space in `All  Users` would each be a new group that an administrator reads as the
//! built-in one in the admin UI. The comparison here is Unicode's own (UTS #39 confusable
//! detection, via the `unicode-security` crate, after NFKC, lower-casing and collapsing
//! whitespace), not a hand-written table. A name that *is* a built-in name (any case, surrounding
//! spaces ignored) is not a look-alike: the callers have their own rule for naming built-in
//! groups (messages may not; `mbprov apply` may).

use unicode_normalization::UnicodeNormalization;
use unicode_security::skeleton;

/// The built-in groups' names, as Metabase shows them (`magic_group_type` `admin`,
/// `all-internal-users` under both of its names, `all-external-users`, `data-analyst`).
const BUILTIN: &[&str] = &[
    "Administrators",
    "All Users",
    "All internal users",
    "All tenant users",
    "Data Analysts",
];

/// Why a group name is refused; the caller adds the field.
pub fn check(name: &str) -> Result<(), String> {
    if let Some(c) = name.chars().find(|c| is_hidden(*c)) {
        return Err(format!(
            "contains U+{:04X}, a control or invisible character: group names must read as they are",
            c as u32
        ));
    }
    let key = confusable_key(name);
    let plain = name.trim().to_lowercase();
    for builtin in BUILTIN {
        if plain != builtin.to_lowercase() && key == confusable_key(builtin) {
            return Err(format!(
                "{name:?} looks like the built-in group {builtin:?} (Unicode confusables, case and \
                 spacing ignored): choose a name that cannot be mistaken for it"
            ));
        }
    }
    Ok(())
}

/// A control character, or one Unicode says a renderer may draw as nothing
/// (Default_Ignorable_Code_Point: zero-width spaces and joiners, BOM, bidi controls, soft
/// hyphen, variation selectors, fillers...). The skeleton drops exactly those, so a character
/// whose skeleton is empty is one of them.
fn is_hidden(c: char) -> bool {
    c.is_control() || skeleton(c.encode_utf8(&mut [0; 4])).next().is_none()
}

/// What a name looks like: NFKC (fullwidth and compatibility forms become plain letters),
/// whitespace runs as one space, trimmed, then the UTS #39 skeleton (characters that look alike
/// map to one prototype) taken before and after lower-casing: the skeleton is case-sensitive
/// (a capital `I` looks like `l`, which lower-casing first would lose), the comparison is not.
fn confusable_key(name: &str) -> String {
    let normal: String = name.nfkc().collect();
    let spaced = normal.split_whitespace().collect::<Vec<_>>().join(" ");
    let shape: String = skeleton(&spaced).collect();
    skeleton(&shape.to_lowercase()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_of_built_in_groups_are_refused_and_other_names_accepted() {
        #[rustfmt::skip]
        let cases: &[(&str, Option<&str>)] = &[
            // (name, part of the refusal; None = accepted)
            ("Administrators\u{200B}", Some("U+200B, a control or invisible")),
            ("\u{FEFF}All Users", Some("U+FEFF")),
            ("Admin\u{202E}srotart", Some("U+202E")),
            ("Data\u{00AD}Analysts", Some("U+00AD")),
            ("All\tUsers", Some("U+0009")),
            ("Tenant: 42\u{2066}", Some("U+2066")),
            ("\u{0410}dministrators", Some("looks like the built-in group \"Administrators\"")),
            ("All  Users", Some("looks like the built-in group \"All Users\"")),
            ("All Users ", None), // the built-in name itself: the callers' own rule
            ("ALL USERS", None),
            ("\u{FF21}\u{FF4C}\u{FF4C} \u{FF35}\u{FF53}\u{FF45}\u{FF52}\u{FF53}", Some("\"All Users\"")),
            ("All\u{3000}tenant users", Some("\"All tenant users\"")),
            ("Adrninistrators", Some("\"Administrators\"")),
            ("Data AnaIysts", Some("\"Data Analysts\"")),
            ("AII Users", Some("\"All Users\"")),
            ("A11 Users", Some("\"All Users\"")),
            ("Tenant: 42", None),
            ("Analysts", None),
            ("Administrators of Acme", None),
            ("Аналитики", None),
            ("営業部", None),
            ("Ärzte & Pflege", None),
        ];
        for (name, want) in cases {
            match (check(name), want) {
                (Ok(()), None) => {}
                (Err(got), Some(want)) => assert!(got.contains(want), "{name:?}: {got}"),
                (got, want) => panic!("{name:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_built_in_names_are_the_policy_s() {
        for name in BUILTIN {
            assert!(super::super::policy::is_builtin_group_name(name), "{name}");
        }
    }
}
