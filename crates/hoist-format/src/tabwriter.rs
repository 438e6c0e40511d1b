//! Elastic tabstops exactly as docker's fork of Go's `text/tabwriter` lays
//! them out.
//!
//! The `tabwriter` crate differs from Go in ways that show up in a docker
//! table (its column blocks do not end at a line with fewer cells, so a
//! column can be wider than Go makes it), hence this port. Only what
//! docker uses is kept: space padding, left alignment, no flags.
//!
//! Rules worth knowing: cells are *tab-terminated*, so the text after the
//! last tab of a line is not part of any column and is never padded; a
//! column is a run of consecutive lines that all have a cell at that
//! index; its width is the widest cell plus `padding`, but at least
//! `min_width`. Widths count terminal columns (East Asian wide = 2).

use std::io::{self, Write};

use unicode_width::UnicodeWidthChar;

/// One tab-terminated (or line-final) piece of text.
#[derive(Debug, Clone)]
struct Cell {
    text: String,
    width: usize,
}

/// Buffers tab-separated text and writes it aligned on [`flush`](Self::flush).
#[derive(Debug)]
pub struct TabWriter<W: Write> {
    out: W,
    min_width: usize,
    padding: usize,
    pad_char: char,
    /// Completed lines; the last entry is the line being written.
    lines: Vec<Vec<Cell>>,
    /// Bytes of the current cell not yet terminated by `\t` or `\n`.
    pending: Vec<u8>,
}

impl<W: Write> TabWriter<W> {
    /// Docker's settings: `NewWriter(out, 10, 1, 3, ' ', 0)`.
    pub fn docker(out: W) -> Self {
        Self::new(out, 10, 3, ' ')
    }

    /// A writer with Go's `minwidth`, `padding` and `padchar`. (Go's
    /// `tabwidth` only matters when padding with tabs, which docker never
    /// does.)
    pub fn new(out: W, min_width: usize, padding: usize, pad_char: char) -> Self {
        Self {
            out,
            min_width,
            padding,
            pad_char,
            lines: vec![Vec::new()],
            pending: Vec::new(),
        }
    }

    /// Returns the underlying writer. Call [`flush`](Self::flush) first.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn terminate_cell(&mut self) {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        let width = display_width(&text);
        if let Some(line) = self.lines.last_mut() {
            line.push(Cell { text, width });
        }
    }

    /// Lays out and writes everything buffered so far.
    fn write_all_lines(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.terminate_cell();
        }
        let lines = std::mem::replace(&mut self.lines, vec![Vec::new()]);
        let mut out = String::new();
        let mut widths = Vec::new();
        self.format(&lines, &mut widths, 0, lines.len(), &mut out);
        self.out.write_all(out.as_bytes())
    }

    /// Go's `format`: find the column block starting at each line that has a
    /// cell in column `widths.len()`, size it, and recurse to the right.
    fn format(
        &self,
        lines: &[Vec<Cell>],
        widths: &mut Vec<usize>,
        mut line0: usize,
        line1: usize,
        out: &mut String,
    ) {
        let column = widths.len();
        let mut this = line0;
        while this < line1 {
            if column + 1 >= lines[this].len() {
                this += 1;
                continue;
            }
            // `this` starts a block of lines that all have a cell in `column`
            // (not counting each line's final, unterminated cell).
            self.write_lines(lines, widths, line0, this, out);
            line0 = this;
            let mut width = self.min_width;
            while this < line1 && column + 1 < lines[this].len() {
                width = width.max(lines[this][column].width + self.padding);
                this += 1;
            }
            widths.push(width);
            self.format(lines, widths, line0, this, out);
            widths.pop();
            line0 = this;
        }
        self.write_lines(lines, widths, line0, line1, out);
    }

    fn write_lines(
        &self,
        lines: &[Vec<Cell>],
        widths: &[usize],
        line0: usize,
        line1: usize,
        out: &mut String,
    ) {
        for (index, line) in lines.iter().enumerate().take(line1).skip(line0) {
            for (column, cell) in line.iter().enumerate() {
                out.push_str(&cell.text);
                if let Some(&width) = widths.get(column) {
                    out.extend(std::iter::repeat_n(self.pad_char, width - cell.width));
                }
            }
            // The final buffered line has no newline of its own.
            if index + 1 < lines.len() {
                out.push('\n');
            }
        }
    }
}

impl<W: Write> Write for TabWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &byte in buf {
            match byte {
                b'\t' | b'\x0b' => self.terminate_cell(),
                b'\n' | b'\x0c' => {
                    self.terminate_cell();
                    self.lines.push(Vec::new());
                    // A form feed ends every column, as a flush does.
                    if byte == b'\x0c' {
                        self.write_all_lines()?;
                    }
                }
                _ => self.pending.push(byte),
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_all_lines()?;
        self.out.flush()
    }
}

/// Terminal columns taken by `text`, as go-runewidth counts them: wide and
/// full-width characters take 2, combining marks and controls take 0.
pub(crate) fn display_width(text: &str) -> usize {
    text.chars().map(|c| c.width().unwrap_or(0)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn align(input: &str) -> String {
        let mut writer = TabWriter::docker(Vec::new());
        writer.write_all(input.as_bytes()).unwrap();
        writer.flush().unwrap();
        String::from_utf8(writer.into_inner()).unwrap()
    }

    #[test]
    fn docker_images_table() {
        let input = "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE\n\
                     busybox\tlatest\ta416a98b71e2\t2 months ago\t4.26MB\n";
        assert_eq!(
            align(input),
            "REPOSITORY   TAG       IMAGE ID       CREATED        SIZE\n\
             busybox      latest    a416a98b71e2   2 months ago   4.26MB\n"
        );
    }

    #[test]
    fn last_cell_is_not_padded_but_tab_terminated_cells_are() {
        assert_eq!(align("a\tb\t\n"), "a         b         \n");
        assert_eq!(align("a\tb\n"), "a         b\n");
    }

    #[test]
    fn a_line_without_tabs_ends_the_column_block() {
        let input = "aaaaaaaaaaaaaaa\tb\nline\nc\td\n";
        assert_eq!(align(input), "aaaaaaaaaaaaaaa   b\nline\nc         d\n");
    }

    /// Go's doc example: the b and c cells are in distinct columns because
    /// the third line has no second column.
    #[test]
    fn columns_are_contiguous_runs() {
        let mut writer = TabWriter::new(Vec::new(), 0, 1, '.');
        writer
            .write_all(b"aaaa\tbbb\td\naa\tb\tdd\na\t\naa\tcccc\teee\n")
            .unwrap();
        writer.flush().unwrap();
        assert_eq!(
            String::from_utf8(writer.into_inner()).unwrap(),
            "aaaa.bbb.d\naa...b...dd\na....\naa...cccc.eee\n"
        );
    }

    #[test]
    fn wide_characters_count_twice() {
        assert_eq!(
            align("中文中文中文\tx\nab\ty\n"),
            "中文中文中文   x\nab             y\n"
        );
    }

    #[test]
    fn unterminated_last_line_is_written_as_is() {
        assert_eq!(align("a\tb\nc\td"), "a         b\nc         d");
    }
}
