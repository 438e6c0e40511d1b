//! Shortening identifiers and text for table cells, as docker does.

use unicode_width::UnicodeWidthChar;

/// Docker's short image ID: drop everything up to the first `:` (the
/// digest algorithm) and keep at most 12 characters.
pub fn truncate_id(id: &str) -> &str {
    let id = id.split_once(':').map_or(id, |(_, hex)| hex);
    id.get(..12).unwrap_or(id)
}

/// Shortens `text` to fit `max_width` terminal columns, ending it with `…`
/// (docker's `formatter.Ellipsis`). East Asian wide characters count 2.
///
/// Docker's quirks are kept: a width of 1 returns the first character
/// whatever its width, and text whose first character alone is wider than
/// `max_width - 1` comes back unchanged.
///
/// `docker history` cuts CREATED BY with `ellipsis(&created_by.replace('\t', " "), 45)`
/// unless `--no-trunc`.
pub fn ellipsis(text: &str, max_width: usize) -> String {
    if max_width == 0 {
        return String::new();
    }
    if max_width == 1 {
        return text.chars().next().map(String::from).unwrap_or_default();
    }
    if text.is_ascii() {
        if text.len() <= max_width {
            return text.to_owned();
        }
        return format!("{}…", &text[..max_width - 1]);
    }

    // Running display width after each character.
    let ends: Vec<usize> = text
        .chars()
        .scan(0, |width, c| {
            *width += char_width(c);
            Some(*width)
        })
        .collect();
    if ends.last().is_none_or(|&total| total <= max_width) {
        return text.to_owned();
    }
    let budget = max_width - 1;
    for index in 0..ends.len() {
        if ends[index] <= budget && ends.get(index + 1).is_some_and(|&next| next > budget) {
            let kept: String = text.chars().take(index + 1).collect();
            return format!("{kept}…");
        }
    }
    text.to_owned()
}

/// Docker's `charWidth` (golang.org/x/text/width): 2 for East Asian wide
/// and full-width characters, 1 for everything else.
fn char_width(c: char) -> usize {
    if c.width() == Some(2) { 2 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases from docker's `TestTruncateID`.
    #[test]
    fn truncate_id_strips_algorithm() {
        let full = "90435eec5c4e124e741ef731e118be2fc799a68aba0466ec17717f24ce2ae6a2";
        assert_eq!(truncate_id(""), "");
        assert_eq!(truncate_id("1234"), "1234");
        assert_eq!(truncate_id(full), "90435eec5c4e");
        assert_eq!(truncate_id(&format!("sha256:{full}")), "90435eec5c4e");
        assert_eq!(truncate_id(&format!("{full}{full}")), "90435eec5c4e");
        assert_eq!(truncate_id("<missing>"), "<missing>");
    }

    /// Cases from docker's `displayutils_test.go`, then a few more.
    #[test]
    fn ellipsis_matches_docker() {
        let cases = [
            ("t🐳ststring", 0, ""),
            ("t🐳ststring", 1, "t"),
            ("t🐳ststring", 2, "t…"),
            ("t🐳ststring", 6, "t🐳st…"),
            ("t🐳ststring", 20, "t🐳ststring"),
            ("你好世界teststring", 0, ""),
            ("你好世界teststring", 1, "你"),
            ("你好世界teststring", 3, "你…"),
            ("你好世界teststring", 6, "你好…"),
            ("你好世界teststring", 20, "你好世界teststring"),
            // Derived from the same code: a wide first character that cannot
            // fit next to the ellipsis leaves the text as it is.
            ("你好", 2, "你好"),
            ("t🐳ststring", 5, "t🐳s…"),
            ("abcdefghijklmnopqrstuvwxyz", 5, "abcd…"),
            ("abcde", 5, "abcde"),
            ("", 3, ""),
        ];
        for (text, width, expected) in cases {
            assert_eq!(ellipsis(text, width), expected, "{text:?} at {width}");
        }
    }

    #[test]
    fn history_created_by_is_cut_at_45_columns() {
        let created_by = "/bin/sh -c #(nop)  CMD [\"sh\"]\t && echo a very long command line";
        let cell = ellipsis(&created_by.replace('\t', " "), 45);
        assert_eq!(cell, "/bin/sh -c #(nop)  CMD [\"sh\"]  && echo a ver…");
        assert_eq!(cell.chars().count(), 45);
    }
}
