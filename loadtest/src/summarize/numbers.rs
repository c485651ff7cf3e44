//! Small statistics on the text the bench passes around: numbers, or `?` for a value a run
//! did not produce. Each result is text too, `?` when it cannot be computed.

/// The median of the numbers among `values` (`?` and other text left out): the middle value
/// as given for an odd count, the mean of the middle two for an even count, `?` for none.
pub fn median(values: &[String]) -> String {
    let mut numbers: Vec<(f64, &str)> = values
        .iter()
        .filter(|v| is_plain_number(v))
        .filter_map(|v| v.parse::<f64>().ok().map(|n| (n, v.as_str())))
        .collect();
    numbers.sort_by(|a, b| a.0.total_cmp(&b.0));
    match numbers.len() {
        0 => "?".to_owned(),
        n if n % 2 == 1 => numbers[n / 2].1.to_owned(),
        n => short(f64::midpoint(numbers[n / 2 - 1].0, numbers[n / 2].0)),
    }
}

/// `met` or `**not met**` for `value op target` (op `>=`, `<`, `==`, anything else `<=`);
/// `?` when either side is not a number.
pub fn verdict(value: &str, op: &str, target: &str) -> String {
    let (Some(v), Ok(t)) = (
        is_plain_number(value)
            .then(|| value.parse::<f64>().ok())
            .flatten(),
        target.trim().parse::<f64>(),
    ) else {
        return "?".to_owned();
    };
    let met = match op {
        ">=" => v >= t,
        "<" => v < t,
        "==" => v == t,
        _ => v <= t,
    };
    if met { "met" } else { "**not met**" }.to_owned()
}

/// `expr` (`a`, `b`, `c`, numbers, `+ - * /`, parentheses) on `values` (missing ones are 0),
/// printed with `format` (`%.Nf`); `?` when a value is not a number, on a division by zero,
/// or for an expression or format it does not read.
pub fn calc(format: &str, expr: &str, values: &[String]) -> String {
    let mut vars = [0.0; 3];
    for (slot, text) in vars.iter_mut().zip(values) {
        match text.parse::<f64>() {
            Ok(v) if is_number(text) => *slot = v,
            _ => return "?".to_owned(),
        }
    }
    let Some(decimals) = format
        .strip_prefix("%.")
        .and_then(|f| f.strip_suffix('f'))
        .and_then(|d| d.parse::<usize>().ok())
        // Past 17 decimals an f64 has no more digits to show; the cap also keeps a typo such
        // as `%.99999999f` from building a huge string.
        .filter(|d| *d <= 17)
    else {
        return "?".to_owned();
    };
    let mut parser = Parser {
        text: expr.as_bytes(),
        at: 0,
        vars,
    };
    match parser.sum() {
        Some(v) if v.is_finite() && parser.done() => format!("{v:.decimals$}"),
        _ => "?".to_owned(),
    }
}

/// Digits with an optional sign and dots, as the bench's values are (`12`, `0.61`, `-3`).
fn is_plain_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// A decimal number with an optional exponent (`1.5`, `-2`, `3e-4`).
fn is_number(text: &str) -> bool {
    let t = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, "1"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole)
        && digits(fraction)
        && exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)))
}

/// A computed number as awk prints one: whole numbers without a fraction, others with six
/// significant digits (`%.6g`: trailing zeros dropped, an exponent past 1e6).
pub fn short(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e16 {
        return format!("{v:.0}");
    }
    let exponent = v.abs().log10().floor() as i32;
    if !(-4..6).contains(&exponent) {
        let text = format!("{v:.5e}");
        let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{}e{sign}{:02}", trim_zeros(mantissa), exp.abs());
    }
    let decimals = usize::try_from(5 - exponent).unwrap_or(0);
    trim_zeros(&format!("{v:.decimals$}")).to_owned()
}

fn trim_zeros(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// Recursive descent over `sum := product (('+'|'-') product)*`,
/// `product := atom (('*'|'/') atom)*`, `atom := number | a | b | c | '(' sum ')' | '-' atom`.
/// `None` for a division by zero or text it does not read.
struct Parser<'a> {
    text: &'a [u8],
    at: usize,
    vars: [f64; 3],
}

impl Parser<'_> {
    fn peek(&mut self) -> Option<u8> {
        while self.text.get(self.at) == Some(&b' ') {
            self.at += 1;
        }
        self.text.get(self.at).copied()
    }

    fn done(&mut self) -> bool {
        self.peek().is_none()
    }

    fn sum(&mut self) -> Option<f64> {
        let mut v = self.product()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.at += 1;
            let rhs = self.product()?;
            v = if op == b'+' { v + rhs } else { v - rhs };
        }
        Some(v)
    }

    fn product(&mut self) -> Option<f64> {
        let mut v = self.atom()?;
        while let Some(op @ (b'*' | b'/')) = self.peek() {
            self.at += 1;
            let rhs = self.atom()?;
            if op == b'/' && rhs == 0.0 {
                return None;
            }
            v = if op == b'*' { v * rhs } else { v / rhs };
        }
        Some(v)
    }

    fn atom(&mut self) -> Option<f64> {
        match self.peek()? {
            b'(' => {
                self.at += 1;
                let v = self.sum()?;
                (self.peek()? == b')').then(|| self.at += 1)?;
                Some(v)
            }
            b'-' => {
                self.at += 1;
                Some(-self.atom()?)
            }
            c @ b'a'..=b'c' => {
                self.at += 1;
                Some(self.vars[usize::from(c - b'a')])
            }
            c if c.is_ascii_digit() || c == b'.' => {
                let start = self.at;
                while self
                    .text
                    .get(self.at)
                    .is_some_and(|b| b.is_ascii_digit() || *b == b'.' || *b == b'e')
                {
                    self.at += 1;
                }
                std::str::from_utf8(&self.text[start..self.at])
                    .ok()?
                    .parse()
                    .ok()
            }
            _ => None,
        }
    }
}
