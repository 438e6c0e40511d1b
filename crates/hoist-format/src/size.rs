//! Byte counts as docker prints them (go-units `HumanSize` and friends).
//!
//! Docker formats sizes with Go's `%.*g`, so the rounding and the switch to
//! exponent notation (`1e+03kB` for 999.5..1000 kB) are reproduced here
//! digit for digit rather than approximated with Rust's own float formatting.

const DECIMAL_UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
const BINARY_UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];

/// `size` in decimal units (÷1000) with `precision` significant digits and
/// no space before the unit: `0B`, `7.8MB`, `213MB`, `1.09GB`.
///
/// Docker uses precision 3 for image and layer sizes.
pub fn human_size_with_precision(size: f64, precision: usize) -> String {
    let (size, unit) = scale(size, 1000.0, &DECIMAL_UNITS);
    format!("{}{unit}", format_g(size, precision))
}

/// `size` in decimal units with 4 significant digits (`1.024kB`), as used
/// for prune totals and `SharedSize`/`UniqueSize`.
pub fn human_size(size: f64) -> String {
    human_size_with_precision(size, 4)
}

/// `size` in binary units (÷1024) with 4 significant digits (`3.42GiB`).
pub fn bytes_size(size: f64) -> String {
    let (size, unit) = scale(size, 1024.0, &BINARY_UNITS);
    format!("{}{unit}", format_g(size, 4))
}

fn scale(mut size: f64, base: f64, units: &[&'static str]) -> (f64, &'static str) {
    let mut index = 0;
    while size >= base && index < units.len() - 1 {
        size /= base;
        index += 1;
    }
    (size, units[index])
}

/// Go's `fmt.Sprintf("%.*g", precision, value)`.
///
/// Go rounds to `precision` significant digits (ties to even on the exact
/// binary value, as Rust's `{:e}` does), drops trailing zeros, and uses
/// exponent form when the decimal exponent is < -4 or >= the precision.
pub(crate) fn format_g(value: f64, precision: usize) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        // strconv gives "+Inf"; fmt drops the plus sign without the `+` flag.
        return if value > 0.0 { "Inf" } else { "-Inf" }.to_owned();
    }
    let sign = if value.is_sign_negative() { "-" } else { "" };
    if value == 0.0 {
        return format!("{sign}0");
    }
    let precision = precision.max(1);

    let scientific = format!("{:.*e}", precision - 1, value.abs());
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("`{:e}` output always has an exponent");
    let exponent: i64 = exponent.parse().expect("`{:e}` exponent is an integer");
    let mut digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    let digit_count = digits.len() as i64;
    // Position of the decimal point relative to the first digit (Go's `dp`).
    let point = exponent + 1;
    let precision = precision as i64;

    let mut exponent_limit = precision;
    if exponent_limit > digit_count && digit_count >= point {
        exponent_limit = digit_count;
    }
    let mut out = String::from(sign);
    if exponent < -4 || exponent >= exponent_limit {
        let kept = precision.min(digit_count) as usize;
        out.push(char::from(digits[0]));
        if kept > 1 {
            out.push('.');
            out.extend(digits[1..kept].iter().map(|&digit| char::from(digit)));
        }
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        out.push_str(&format!("e{exponent_sign}{:02}", exponent.abs()));
    } else {
        let kept = if precision > point {
            digit_count
        } else {
            precision
        };
        let fraction = (kept - point).max(0);
        let digit_at = |index: i64| {
            usize::try_from(index)
                .ok()
                .and_then(|index| digits.get(index))
                .map_or('0', |&digit| char::from(digit))
        };
        if point > 0 {
            out.extend((0..point).map(digit_at));
        } else {
            out.push('0');
        }
        if fraction > 0 {
            out.push('.');
            out.extend((0..fraction).map(|offset| digit_at(point + offset)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_percent_g() {
        let cases: &[(f64, usize, &str)] = &[
            (0.0, 3, "0"),
            (7.8, 3, "7.8"),
            (100.0, 3, "100"),
            (213.4, 3, "213"),
            (999.4, 3, "999"),
            (999.5, 3, "1e+03"),
            (999.9, 3, "1e+03"),
            (1.125, 3, "1.12"), // exact tie rounds to even
            (1.135, 3, "1.14"),
            (1.0, 4, "1"),
            (1.024, 4, "1.024"),
            (1.048576, 4, "1.049"),
            (10000.0, 4, "1e+04"),
            (1234.5678, 4, "1235"),
            (0.0001, 3, "0.0001"),
            (0.00001234, 3, "1.23e-05"),
            (0.1, 3, "0.1"),
            (123456789.0, 3, "1.23e+08"),
            (-5.0, 3, "-5"),
            (5.0, 0, "5"),
            (f64::INFINITY, 3, "Inf"),
            (f64::NAN, 3, "NaN"),
        ];
        for &(value, precision, expected) in cases {
            assert_eq!(
                format_g(value, precision),
                expected,
                "%.{precision}g of {value}"
            );
        }
    }

    /// go-units' `TestHumanSize` and `TestBytesSize`.
    #[test]
    fn go_units_tables() {
        const KB: f64 = 1000.0;
        const MB: f64 = 1000.0 * KB;
        const GB: f64 = 1000.0 * MB;
        const TB: f64 = 1000.0 * GB;
        const PB: f64 = 1000.0 * TB;
        const KIB: f64 = 1024.0;
        const MIB: f64 = 1024.0 * KIB;
        const GIB: f64 = 1024.0 * MIB;
        const TIB: f64 = 1024.0 * GIB;
        const PIB: f64 = 1024.0 * TIB;
        for (size, expected) in [
            (1000.0, "1kB"),
            (1024.0, "1.024kB"),
            (1_000_000.0, "1MB"),
            (1_048_576.0, "1.049MB"),
            (2.0 * MB, "2MB"),
            (3.42 * GB, "3.42GB"),
            (5.372 * TB, "5.372TB"),
            (2.22 * PB, "2.22PB"),
            (10_000_000_000_000.0 * PB, "1e+04YB"),
        ] {
            assert_eq!(human_size(size), expected, "HumanSize({size})");
        }
        for (size, expected) in [
            (1024.0, "1KiB"),
            (1024.0 * 1024.0, "1MiB"),
            (2.0 * MIB, "2MiB"),
            (3.42 * GIB, "3.42GiB"),
            (5.372 * TIB, "5.372TiB"),
            (2.22 * PIB, "2.22PiB"),
            (KIB * KIB * KIB * KIB * KIB * PIB, "1.049e+06YiB"),
        ] {
            assert_eq!(bytes_size(size), expected, "BytesSize({size})");
        }
    }

    /// Image and layer sizes as `docker images` / `docker history` show them.
    #[test]
    fn docker_image_sizes() {
        for (bytes, expected) in [
            (0_u64, "0B"),
            (999, "999B"),
            (1000, "1kB"),
            (1125, "1.12kB"), // an exact tie rounds to even, like Go
            (999_499, "999kB"),
            (999_500, "1e+03kB"),
            (999_999, "1e+03kB"),
            (1_000_000, "1MB"),
            (4_261_550, "4.26MB"),
            (7_800_000, "7.8MB"),
            (213_000_000, "213MB"),
            (1_089_000_000, "1.09GB"),
        ] {
            assert_eq!(
                human_size_with_precision(bytes as f64, 3),
                expected,
                "{bytes} bytes"
            );
        }
    }
}
