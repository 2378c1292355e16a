//! When the next attempt of a failed message happens (spec §10): the default exponential
//! backoff, the `Upstash-Retry-Delay` expression language and the destination-steered delay
//! of `Retry-After`-style response headers.

use crate::duration::parse_duration;
use crate::error::{Invalid, Result};
use std::time::Duration;

/// The longest delay between two attempts; larger computed values are capped to it.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(86_400);

/// `min(86400, e^(2.5·n))` seconds, where `n` counts the retries performed including the one
/// being scheduled (so `n = 1` before the first retry: about 12 s).
pub fn default_backoff(retry_number: u32) -> Duration {
    let seconds = (2.5 * f64::from(retry_number)).exp();
    Duration::from_secs_f64(seconds.min(MAX_RETRY_DELAY.as_secs_f64()))
}

/// Chooses the delay before the retry that follows attempt number `retried` (0 for the first
/// attempt): a usable response hint wins, then the custom expression, then the default backoff.
pub fn next_retry_delay(
    retried: u32,
    expression: Option<&RetryDelayExpr>,
    response_hint: Option<Duration>,
) -> Duration {
    if let Some(hint) = response_hint {
        return hint;
    }
    match expression {
        Some(expression) => expression.delay(retried),
        None => default_backoff(retried + 1),
    }
}

/// A parsed `Upstash-Retry-Delay` expression: arithmetic over the variable `retried` (retries
/// performed so far, 0 before the first retry) whose value is the delay in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryDelayExpr {
    source: String,
    root: Expr,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Number(f64),
    Retried,
    Negate(Box<Expr>),
    Binary(char, Box<Expr>, Box<Expr>),
    Call(Function, Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Function {
    Pow,
    Sqrt,
    Abs,
    Exp,
    Floor,
    Ceil,
    Round,
    Min,
    Max,
    Random,
}

impl Function {
    fn lookup(name: &str) -> Option<(Function, usize)> {
        Some(match name {
            "pow" => (Function::Pow, 2),
            "sqrt" => (Function::Sqrt, 1),
            "abs" => (Function::Abs, 1),
            "exp" => (Function::Exp, 1),
            "floor" => (Function::Floor, 1),
            "ceil" => (Function::Ceil, 1),
            "round" => (Function::Round, 1),
            "min" => (Function::Min, 2),
            "max" => (Function::Max, 2),
            "$random" => (Function::Random, 2),
            _ => return None,
        })
    }
}

impl RetryDelayExpr {
    pub fn parse(source: &str) -> Result<Self> {
        if source.len() > MAX_LENGTH {
            return Err(Invalid::new(format!(
                "invalid Upstash-Retry-Delay expression: longer than {MAX_LENGTH} characters"
            )));
        }
        let mut parser = Parser { input: source.as_bytes(), position: 0, depth: 0 };
        let root = parser.expression().and_then(|root| {
            parser.skip_spaces();
            if parser.position < parser.input.len() { Err(parser.error("unexpected character")) } else { Ok(root) }
        });
        let root = root
            .map_err(|reason| Invalid::new(format!("invalid Upstash-Retry-Delay expression {source:?}: {reason}")))?;
        Ok(RetryDelayExpr { source: source.trim().to_string(), root })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The raw value in milliseconds (may be negative or NaN).
    pub fn evaluate(&self, retried: u32) -> f64 {
        evaluate(&self.root, f64::from(retried))
    }

    /// The delay to wait: negative or non-numeric results mean "now", large ones are capped at
    /// one day like the default backoff.
    pub fn delay(&self, retried: u32) -> Duration {
        let millis = self.evaluate(retried);
        if !millis.is_finite() || millis <= 0.0 {
            return if millis == f64::INFINITY { MAX_RETRY_DELAY } else { Duration::ZERO };
        }
        Duration::from_secs_f64((millis / 1000.0).min(MAX_RETRY_DELAY.as_secs_f64()))
    }
}

fn evaluate(expr: &Expr, retried: f64) -> f64 {
    match expr {
        Expr::Number(value) => *value,
        Expr::Retried => retried,
        Expr::Negate(inner) => -evaluate(inner, retried),
        Expr::Binary(op, left, right) => {
            let (left, right) = (evaluate(left, retried), evaluate(right, retried));
            match op {
                '+' => left + right,
                '-' => left - right,
                '*' => left * right,
                '/' => left / right,
                _ => left % right,
            }
        }
        Expr::Call(function, args) => {
            let arg = |i: usize| evaluate(&args[i], retried);
            match function {
                Function::Pow => arg(0).powf(arg(1)),
                Function::Sqrt => arg(0).sqrt(),
                Function::Abs => arg(0).abs(),
                Function::Exp => arg(0).exp(),
                Function::Floor => arg(0).floor(),
                Function::Ceil => arg(0).ceil(),
                Function::Round => arg(0).round(),
                Function::Min => arg(0).min(arg(1)),
                Function::Max => arg(0).max(arg(1)),
                Function::Random => {
                    let (low, high) = (arg(0).min(arg(1)), arg(0).max(arg(1)));
                    let span = high - low;
                    if span.is_finite() && span > 0.0 { low + rand::random::<f64>() * span } else { low }
                }
            }
        }
    }
}

/// A recursive-descent parser over `+ - * / %`, unary minus, parentheses, numbers, `retried`
/// and the function calls listed in [`Function::lookup`].
struct Parser<'a> {
    input: &'a [u8],
    position: usize,
    depth: usize,
}

const MAX_NESTING: usize = 64;
/// Longer expressions are refused: the tree (built, evaluated and dropped recursively) stays
/// small whatever a client sends.
const MAX_LENGTH: usize = 256;

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("{what} at position {}", self.position)
    }

    fn skip_spaces(&mut self) {
        while self.position < self.input.len() && self.input[self.position].is_ascii_whitespace() {
            self.position += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_spaces();
        self.input.get(self.position).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.peek() == Some(byte) {
            self.position += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", byte as char)))
        }
    }

    fn expression(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.error("expression nested too deeply"));
        }
        let mut left = self.term()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.position += 1;
            let right = self.term()?;
            left = Expr::Binary(op as char, Box::new(left), Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn term(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while let Some(op @ (b'*' | b'/' | b'%')) = self.peek() {
            self.position += 1;
            let right = self.unary()?;
            left = Expr::Binary(op as char, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some(b'-') => {
                self.position += 1;
                self.depth += 1;
                if self.depth > MAX_NESTING {
                    return Err(self.error("expression nested too deeply"));
                }
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Negate(Box::new(inner)))
            }
            Some(b'+') => {
                self.position += 1;
                self.depth += 1;
                if self.depth > MAX_NESTING {
                    return Err(self.error("expression nested too deeply"));
                }
                let inner = self.unary();
                self.depth -= 1;
                inner
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some(b'(') => {
                self.position += 1;
                let inner = self.expression()?;
                self.expect(b')')?;
                Ok(inner)
            }
            Some(byte) if byte.is_ascii_digit() || byte == b'.' => self.number(),
            Some(byte) if byte.is_ascii_alphabetic() || byte == b'$' => self.name(),
            Some(_) => Err(self.error("unexpected character")),
            None => Err(self.error("unexpected end of expression")),
        }
    }

    fn number(&mut self) -> Result<Expr, String> {
        let start = self.position;
        while self.position < self.input.len()
            && (self.input[self.position].is_ascii_digit() || self.input[self.position] == b'.')
        {
            self.position += 1;
        }
        let text = std::str::from_utf8(&self.input[start..self.position]).unwrap_or_default();
        text.parse::<f64>().map(Expr::Number).map_err(|_| format!("invalid number {text:?} at position {start}"))
    }

    fn name(&mut self) -> Result<Expr, String> {
        let start = self.position;
        while self.position < self.input.len()
            && (self.input[self.position].is_ascii_alphanumeric()
                || self.input[self.position] == b'_'
                || self.input[self.position] == b'$')
        {
            self.position += 1;
        }
        let name = std::str::from_utf8(&self.input[start..self.position]).unwrap_or_default();
        if name == "retried" {
            return Ok(Expr::Retried);
        }
        let Some((function, arity)) = Function::lookup(name) else {
            return Err(format!("unknown name {name:?} at position {start}"));
        };
        self.expect(b'(')?;
        let mut args = vec![self.expression()?];
        while self.peek() == Some(b',') {
            self.position += 1;
            args.push(self.expression()?);
        }
        self.expect(b')')?;
        if args.len() != arity {
            return Err(format!("{name} takes {arity} argument(s), got {} at position {start}", args.len()));
        }
        Ok(Expr::Call(function, args))
    }
}

/// The response headers that may steer the next retry, in the order they are consulted.
pub const RETRY_HINT_HEADERS: [&str; 4] =
    ["retry-after", "x-ratelimit-reset", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"];

/// Reads one `Retry-After`-style value (spec §10.4): integer seconds, an RFC 1123 date or a Go
/// duration (`6m5s`). An integer that can only be a Unix timestamp (more than a day of
/// seconds and within a day of `now`) is read as one. Values beyond one day give `None` so that
/// the normal backoff applies.
pub fn parse_retry_hint(value: &str, now_ms: i64) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(seconds) = value.parse::<u64>() {
        let now_s = u64::try_from(now_ms / 1000).unwrap_or(0);
        if seconds > MAX_RETRY_DELAY.as_secs() && seconds.abs_diff(now_s) <= 86_400 {
            Duration::from_secs(seconds.saturating_sub(now_s))
        } else {
            Duration::from_secs(seconds)
        }
    } else if let Ok(at) = httpdate::parse_http_date(value) {
        let at_ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis().try_into().ok()?;
        Duration::from_millis(u64::try_from(at_ms - now_ms.min(at_ms)).ok()?)
    } else if value.contains(|c: char| c.is_ascii_alphabetic()) {
        parse_duration(value).ok()?
    } else {
        return None;
    };
    (delay <= MAX_RETRY_DELAY).then_some(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(expression: &str, retried: u32) -> f64 {
        RetryDelayExpr::parse(expression).unwrap().evaluate(retried)
    }

    #[test]
    fn default_backoff_matches_the_documented_table() {
        assert_eq!(default_backoff(1).as_secs(), 12);
        assert_eq!(default_backoff(2).as_secs(), 148);
        assert_eq!(default_backoff(3).as_secs(), 1808);
        assert_eq!(default_backoff(4).as_secs(), 22026);
        assert_eq!(default_backoff(5).as_secs(), 86400);
        assert_eq!(default_backoff(40).as_secs(), 86400);
    }

    #[test]
    fn documented_expressions_evaluate() {
        assert_eq!(ms("1000", 3), 1000.0);
        assert_eq!(ms("1000 * (1 + retried)", 2), 3000.0);
        assert_eq!(ms("pow(2, retried) * 1000", 3), 8000.0);
        assert_eq!(ms("max(1000, pow(2, retried) * 100)", 1), 1000.0);
        assert_eq!(ms("max(1000, pow(2, retried) * 100)", 5), 3200.0);
        assert_eq!(ms("5000 * retried", 0), 0.0);
        assert_eq!(ms("pow(retried, 2) * 1000", 3), 9000.0);
        assert_eq!(ms("-retried + 10 % 4", 1), 1.0);
        assert_eq!(ms("sqrt(16) + abs(-2) + floor(1.7) + ceil(1.2) + round(2.5)", 0), 12.0);
        assert_eq!(ms("min(exp(0), 5)", 0), 1.0);
        let random = ms("$random(1, 5)", 0);
        assert!((1.0..=5.0).contains(&random));
    }

    #[test]
    fn invalid_expressions_are_rejected() {
        for bad in [
            "",
            "1000 *",
            "pow(2)",
            "foo(1)",
            "retries * 2",
            "(1 + 2",
            "1 + 2)",
            "1 2",
            "max(1,2,3)",
            "1..2",
            "retried;",
        ] {
            assert!(RetryDelayExpr::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let deep = "(".repeat(100) + "1" + &")".repeat(100);
        assert!(RetryDelayExpr::parse(&deep).is_err());
        assert!(RetryDelayExpr::parse(&"+".repeat(100_000)).is_err(), "no stack overflow on unary chains");
        assert!(RetryDelayExpr::parse(&"1+".repeat(50_000)).is_err(), "nor on long binary chains");
        let wide = RetryDelayExpr::parse("$random(-pow(10, 308), pow(10, 308))").unwrap();
        let _ = wide.delay(0);
    }

    #[test]
    fn delays_are_clamped() {
        let negative = RetryDelayExpr::parse("-5000").unwrap();
        assert_eq!(negative.delay(0), Duration::ZERO);
        let nan = RetryDelayExpr::parse("sqrt(-1)").unwrap();
        assert_eq!(nan.delay(0), Duration::ZERO);
        let huge = RetryDelayExpr::parse("pow(10, 20)").unwrap();
        assert_eq!(huge.delay(0), MAX_RETRY_DELAY);
        let infinite = RetryDelayExpr::parse("1 / 0").unwrap();
        assert_eq!(infinite.delay(0), MAX_RETRY_DELAY);
    }

    #[test]
    fn next_delay_prefers_the_response_hint_then_the_expression() {
        let expression = RetryDelayExpr::parse("2000").unwrap();
        let hint = Some(Duration::from_secs(7));
        assert_eq!(next_retry_delay(0, Some(&expression), hint), Duration::from_secs(7));
        assert_eq!(next_retry_delay(0, Some(&expression), None), Duration::from_secs(2));
        assert_eq!(next_retry_delay(0, None, None).as_secs(), 12);
        assert_eq!(next_retry_delay(1, None, None).as_secs(), 148);
    }

    #[test]
    fn retry_hints_accept_seconds_dates_and_durations() {
        let now_ms = 1_700_000_000_000;
        assert_eq!(parse_retry_hint("30", now_ms), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_hint("0", now_ms), Some(Duration::ZERO));
        assert_eq!(parse_retry_hint("6m5s", now_ms), Some(Duration::from_secs(365)));
        assert_eq!(parse_retry_hint("1500ms", now_ms), Some(Duration::from_millis(1500)));
        let date = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_millis(now_ms as u64 + 90_000));
        assert_eq!(parse_retry_hint(&date, now_ms), Some(Duration::from_secs(90)));
        assert_eq!(parse_retry_hint("1700000042", now_ms), Some(Duration::from_secs(42)));
        assert_eq!(parse_retry_hint("100000", now_ms), None);
        assert_eq!(parse_retry_hint("48h", now_ms), None);
        assert_eq!(parse_retry_hint("soon", now_ms), None);
        assert_eq!(parse_retry_hint("-3", now_ms), None);
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(text in "[-+*/%() .,0-9a-z$]{0,40}") {
            if let Ok(expression) = RetryDelayExpr::parse(&text) {
                let _ = expression.delay(3);
            }
        }

        #[test]
        fn delay_is_always_within_bounds(a in -1e9f64..1e9, b in 0u32..50) {
            let expression = RetryDelayExpr::parse(&format!("{a} * retried")).unwrap();
            proptest::prop_assert!(expression.delay(b) <= MAX_RETRY_DELAY);
        }
    }
}
