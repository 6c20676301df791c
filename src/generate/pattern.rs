//! Strings shaped by a `regex` rule's pattern, for the simple shapes configs use (`^DRV\d{5}$`,
//! `^MRN-\d{6}$`, `^[A-Z]{3}-[0-9]{4}$`, `^(ACT|INA)_\w+$`): literals, `\d \w \s .`, bracket
//! classes without negation, groups with alternation, and the quantifiers `? * + {n} {n,} {n,m}`.
//! Anything else (negated classes, look-around, back-references, flags, `\b`) is refused with a
//! reason, and every sample is checked against the real regex by the caller.

use rand::Rng;

/// Longest run an unbounded quantifier (`*`, `+`, `{n,}`) adds beyond its minimum.
const UNBOUNDED_EXTRA: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at character {at}")]
pub struct PatternError {
    pub at: usize,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Literal(char),
    /// Inclusive character ranges.
    Class(Vec<(char, char)>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: u32,
    },
    Concat(Vec<Node>),
    Alternation(Vec<Node>),
    /// `^`, `$`, `\A`, `\z`: they match positions, so they add no characters.
    Anchor,
}

/// A parsed pattern that can produce matching strings.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    root: Node,
}

impl Pattern {
    pub fn parse(pattern: &str) -> Result<Pattern, PatternError> {
        let mut parser = Parser {
            chars: pattern.chars().collect(),
            pos: 0,
        };
        let root = parser.alternation()?;
        if parser.pos < parser.chars.len() {
            return Err(parser.error("unbalanced ')'"));
        }
        Ok(Pattern { root })
    }

    /// A string the pattern matches in full.
    pub fn sample(&self, rng: &mut impl Rng) -> String {
        let mut out = String::new();
        emit(&self.root, rng, &mut out);
        out
    }
}

fn emit(node: &Node, rng: &mut impl Rng, out: &mut String) {
    match node {
        Node::Literal(c) => out.push(*c),
        Node::Class(ranges) => out.push(pick_from_class(ranges, rng)),
        Node::Repeat { node, min, max } => {
            for _ in 0..rng.random_range(*min..=*max) {
                emit(node, rng, out);
            }
        }
        Node::Concat(nodes) => nodes.iter().for_each(|n| emit(n, rng, out)),
        Node::Alternation(branches) => {
            if !branches.is_empty() {
                emit(&branches[rng.random_range(0..branches.len())], rng, out);
            }
        }
        Node::Anchor => {}
    }
}

fn pick_from_class(ranges: &[(char, char)], rng: &mut impl Rng) -> char {
    let size = |&(lo, hi): &(char, char)| u64::from(hi) - u64::from(lo) + 1;
    let total: u64 = ranges.iter().map(size).sum();
    let mut index = rng.random_range(0..total.max(1));
    for range in ranges {
        if index < size(range) {
            // Ranges never span the surrogate gap (see `Parser::class`), so this is a char.
            return char::from_u32(u32::from(range.0) + index as u32).unwrap_or(range.0);
        }
        index -= size(range);
    }
    ranges.first().map(|r| r.0).unwrap_or('x')
}

const DIGITS: &[(char, char)] = &[('0', '9')];
const WORD: &[(char, char)] = &[('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')];

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn error(&self, what: impl Into<String>) -> PatternError {
        PatternError {
            at: self.pos + 1,
            what: what.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn alternation(&mut self) -> Result<Node, PatternError> {
        let mut branches = vec![self.concat()?];
        while self.peek() == Some('|') {
            self.pos += 1;
            branches.push(self.concat()?);
        }
        Ok(if branches.len() == 1 {
            branches.remove(0)
        } else {
            Node::Alternation(branches)
        })
    }

    fn concat(&mut self) -> Result<Node, PatternError> {
        let mut nodes = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            nodes.push(self.quantified(atom)?);
        }
        Ok(Node::Concat(nodes))
    }

    fn atom(&mut self) -> Result<Node, PatternError> {
        let Some(c) = self.peek() else {
            return Err(self.error("unexpected end"));
        };
        self.pos += 1;
        match c {
            '^' | '$' => Ok(Node::Anchor),
            '.' => Ok(Node::Class(vec![('a', 'z')])),
            '(' => {
                if self.peek() == Some('?') {
                    if self.chars.get(self.pos + 1) == Some(&':') {
                        self.pos += 2;
                    } else {
                        return Err(self.error("group flags and look-around are not supported"));
                    }
                }
                let inner = self.alternation()?;
                if self.peek() != Some(')') {
                    return Err(self.error("missing ')'"));
                }
                self.pos += 1;
                Ok(inner)
            }
            '[' => self.class(),
            '\\' => self.escape(),
            '*' | '+' | '?' | '{' => {
                Err(self.error(format!("quantifier '{c}' without anything to repeat")))
            }
            literal => Ok(Node::Literal(literal)),
        }
    }

    fn escape(&mut self) -> Result<Node, PatternError> {
        let Some(c) = self.peek() else {
            return Err(self.error("pattern ends with '\\'"));
        };
        self.pos += 1;
        match c {
            'd' => Ok(Node::Class(DIGITS.to_vec())),
            'w' => Ok(Node::Class(WORD.to_vec())),
            's' => Ok(Node::Literal(' ')),
            'A' | 'z' => Ok(Node::Anchor),
            't' => Ok(Node::Literal('\t')),
            'n' => Ok(Node::Literal('\n')),
            c if c.is_ascii_punctuation() => Ok(Node::Literal(c)),
            other => Err(self.error(format!("escape '\\{other}' is not supported"))),
        }
    }

    fn class(&mut self) -> Result<Node, PatternError> {
        if self.peek() == Some('^') {
            return Err(self.error("negated classes are not supported"));
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error("missing ']'"));
            };
            self.pos += 1;
            if c == ']' && !first {
                break;
            }
            first = false;
            let lo = match c {
                '\\' => match self.peek() {
                    Some('d') => {
                        self.pos += 1;
                        ranges.extend_from_slice(DIGITS);
                        continue;
                    }
                    Some('w') => {
                        self.pos += 1;
                        ranges.extend_from_slice(WORD);
                        continue;
                    }
                    Some(e) if e.is_ascii_punctuation() => {
                        self.pos += 1;
                        e
                    }
                    _ => return Err(self.error("this escape inside a class is not supported")),
                },
                '[' if self.peek() == Some(':') => {
                    return Err(self.error("POSIX classes are not supported"));
                }
                c => c,
            };
            let is_range =
                self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|&n| n != ']');
            if is_range {
                self.pos += 1;
                let Some(mut hi) = self.peek() else {
                    return Err(self.error("missing ']'"));
                };
                self.pos += 1;
                if hi == '\\' {
                    hi = self
                        .peek()
                        .filter(|e| e.is_ascii_punctuation())
                        .ok_or_else(|| self.error("bad range end"))?;
                    self.pos += 1;
                }
                let crosses_surrogates = (lo as u32) < 0xD800 && (hi as u32) > 0xDFFF;
                if hi < lo || crosses_surrogates {
                    return Err(self.error(format!("class range {lo}-{hi} is not supported")));
                }
                ranges.push((lo, hi));
            } else {
                ranges.push((lo, lo));
            }
        }
        Ok(Node::Class(ranges))
    }

    fn quantified(&mut self, atom: Node) -> Result<Node, PatternError> {
        let (min, max) = match self.peek() {
            Some('?') => (0, 1),
            Some('*') => (0, UNBOUNDED_EXTRA),
            Some('+') => (1, 1 + UNBOUNDED_EXTRA),
            Some('{') => return self.counted(atom),
            _ => return Ok(atom),
        };
        self.pos += 1;
        self.skip_lazy_marker();
        Ok(Node::Repeat {
            node: Box::new(atom),
            min,
            max,
        })
    }

    /// `{n}`, `{n,}`, `{n,m}`.
    fn counted(&mut self, atom: Node) -> Result<Node, PatternError> {
        let close = self.chars[self.pos..]
            .iter()
            .position(|&c| c == '}')
            .map(|i| self.pos + i);
        let Some(close) = close else {
            return Err(self.error("missing '}'"));
        };
        let body: String = self.chars[self.pos + 1..close].iter().collect();
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| self.error(format!("bad repetition '{{{body}}}'")))
        };
        let (min, max) = match body.split_once(',') {
            None => {
                let n = number(&body)?;
                (n, n)
            }
            Some((lo, "")) => {
                let n = number(lo)?;
                (n, n + UNBOUNDED_EXTRA)
            }
            Some((lo, hi)) => (number(lo)?, number(hi)?),
        };
        if max < min || max > 1000 {
            return Err(self.error(format!("repetition '{{{body}}}' is not supported")));
        }
        self.pos = close + 1;
        self.skip_lazy_marker();
        Ok(Node::Repeat {
            node: Box::new(atom),
            min,
            max,
        })
    }

    fn skip_lazy_marker(&mut self) {
        if self.peek() == Some('?') {
            self.pos += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    fn samples_match(pattern: &str) {
        let parsed = Pattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        let re = regex::Regex::new(pattern).unwrap_or_else(|e| panic!("{e}"));
        let mut rng = SmallRng::seed_from_u64(7);
        for _ in 0..200 {
            let s = parsed.sample(&mut rng);
            assert!(re.is_match(&s), "{pattern} does not match its sample {s:?}");
        }
    }

    #[test]
    fn samples_of_simple_shapes_match_their_pattern() {
        for pattern in [
            r"^DRV\d{5}$",
            r"^MRN-\d{6}$",
            r"^[A-Z]{3}-[0-9]{4}$",
            r"^(ACT|INA)_\w+$",
            r"^[a-z0-9._-]+@example\.com$",
            r"DRV\d{5}",
            r"^\d{2,4}(?:\.\d)?$",
            r"^x*y+z?$",
        ] {
            samples_match(pattern);
        }
    }

    #[test]
    fn a_fixed_shape_gives_the_expected_length_and_prefix() {
        let mut rng = SmallRng::seed_from_u64(1);
        let s = Pattern::parse(r"^DRV\d{5}$")
            .map(|p| p.sample(&mut rng))
            .unwrap_or_default();
        assert_eq!(s.len(), 8);
        assert!(s.starts_with("DRV") && s[3..].chars().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn unsupported_constructs_are_refused_with_a_position() {
        let err = |p: &str| {
            Pattern::parse(p)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            err("^[^0-9]+$"),
            "negated classes are not supported at character 3"
        );
        assert!(err(r"^(?i)drv\d+$").contains("flags"));
        assert!(err(r"\bword\b").contains("escape '\\b'"));
        assert!(err("a)").contains("unbalanced"));
        assert!(err("*a").contains("quantifier"));
    }
}
