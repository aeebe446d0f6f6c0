//! Validated free text and single-word tokens: the only strings that may appear in a line.
//!
//! Both types reject control characters (including CR, LF, TAB and NUL) and the Unicode line and
//! paragraph separators, so a value can never split one protocol line into two.

use std::fmt;
use std::str::FromStr;

/// Longest [`Token`], in characters.
pub const MAX_TOKEN_CHARS: usize = 256;

/// Why a string was refused as [`Text`] or [`Token`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TextError {
    /// Nothing but white space.
    #[error("is empty")]
    Empty,
    /// A control character or a line separator was found.
    #[error("contains a control character")]
    Control,
    /// A token contained white space.
    #[error("must be a single word")]
    Whitespace,
    /// A token was longer than [`MAX_TOKEN_CHARS`].
    #[error("is longer than {MAX_TOKEN_CHARS} characters")]
    TooLong,
}

/// True for characters that must never travel inside a line.
pub(crate) fn is_forbidden(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Free text: at least one visible character, no control characters, no leading or trailing
/// white space. Used for chat messages and human-readable explanations.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Text(String);

impl Text {
    /// Validates `s`, trimming surrounding white space first.
    ///
    /// # Errors
    /// [`TextError::Empty`] or [`TextError::Control`].
    pub fn new(s: &str) -> Result<Self, TextError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(TextError::Empty);
        }
        if s.chars().any(is_forbidden) {
            return Err(TextError::Control);
        }
        Ok(Self(s.to_owned()))
    }

    /// Builds text from a string the program itself wrote, replacing anything that is not allowed
    /// (control characters become spaces; empty text becomes `-`). Never fails.
    pub fn lossy(s: &str) -> Self {
        let cleaned: String = s
            .chars()
            .map(|c| if is_forbidden(c) { ' ' } else { c })
            .collect();
        Self::new(&cleaned).unwrap_or_else(|_| Self("-".to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Text {
    type Err = TextError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// One word: 1 to [`MAX_TOKEN_CHARS`] characters, no white space, no control characters. Used for
/// ping tokens and the admin token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token(String);

impl Token {
    /// Validates `s` as one word.
    ///
    /// # Errors
    /// [`TextError`] naming what is wrong.
    pub fn new(s: &str) -> Result<Self, TextError> {
        if s.is_empty() {
            return Err(TextError::Empty);
        }
        if s.chars().any(is_forbidden) {
            return Err(TextError::Control);
        }
        if s.chars().any(char::is_whitespace) {
            return Err(TextError::Whitespace);
        }
        if s.chars().count() > MAX_TOKEN_CHARS {
            return Err(TextError::TooLong);
        }
        Ok(Self(s.to_owned()))
    }

    /// The token.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Tokens can be secrets (the admin token): their `Debug` form never shows them.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} chars>)", self.0.chars().count())
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Token {
    type Err = TextError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_refuses_line_breaks_and_controls() {
        assert_eq!(Text::new("a\nb"), Err(TextError::Control));
        assert_eq!(Text::new("a\u{2028}b"), Err(TextError::Control));
        assert_eq!(Text::new("a\0b"), Err(TextError::Control));
        assert_eq!(Text::new("   "), Err(TextError::Empty));
        assert_eq!(Text::new("  hi there ").map(|t| t.0), Ok("hi there".into()));
    }

    #[test]
    fn lossy_text_never_fails_and_never_breaks_a_line() {
        assert_eq!(Text::lossy("a\r\nb").as_str(), "a  b");
        assert_eq!(Text::lossy("\n").as_str(), "-");
    }

    #[test]
    fn token_is_one_word() {
        assert_eq!(Token::new("a b"), Err(TextError::Whitespace));
        assert_eq!(Token::new(""), Err(TextError::Empty));
        assert!(Token::new(&"x".repeat(MAX_TOKEN_CHARS + 1)).is_err());
        assert_eq!(
            format!("{:?}", Token::new("secret").ok()),
            "Some(Token(<6 chars>))"
        );
    }
}
