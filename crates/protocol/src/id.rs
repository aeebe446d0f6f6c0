//! Student identifiers, `COURSE_DIV_NAME_ROLL`, and the class key `(course, division)`.
//!
//! Each field is 1 to N characters (see the `MAX_*_CHARS` constants). The first character is a
//! Unicode letter or digit; the others are letters, digits, combining marks (the vowel signs and
//! viramas of Devanagari, Thai tone marks, decomposed accents), `-`, `.` or `'`. That keeps `_` free as
//! the separator, keeps every field one word on the wire, and means no field can start with a
//! character a spreadsheet would run as a formula (`=`, `+`, `-`, `@`).

use compact_str::CompactString;
use std::fmt;
use std::str::FromStr;
use unicode_normalization::UnicodeNormalization as _;

/// Longest course name, in characters.
pub const MAX_COURSE_CHARS: usize = 32;
/// Longest division, in characters.
pub const MAX_DIVISION_CHARS: usize = 32;
/// Longest student name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest roll number, in characters.
pub const MAX_ROLL_CHARS: usize = 32;

/// Which part of a student identifier a [`Field`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// The course, e.g. `ComputerNetworks`.
    Course,
    /// The division (section) of the course, e.g. `Div1`.
    Division,
    /// The student's name, e.g. `JayPatel`.
    Name,
    /// The roll number, e.g. `18BCP043`.
    Roll,
}

impl FieldKind {
    /// Longest value, in characters.
    pub fn max_chars(self) -> usize {
        match self {
            Self::Course => MAX_COURSE_CHARS,
            Self::Division => MAX_DIVISION_CHARS,
            Self::Name => MAX_NAME_CHARS,
            Self::Roll => MAX_ROLL_CHARS,
        }
    }

    /// Lower-case name used in messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::Course => "course",
            Self::Division => "division",
            Self::Name => "name",
            Self::Roll => "roll",
        }
    }
}

/// Why a field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// The field was empty.
    #[error("{} is empty", .0.label())]
    Empty(FieldKind),
    /// The field was longer than its limit.
    #[error("{} is longer than {} characters", .0.label(), .0.max_chars())]
    TooLong(FieldKind),
    /// The field held a character outside its set.
    #[error("{} may hold only letters, digits and - . ' (starting with a letter or digit), not {:?}", .0.label(), .1)]
    BadChar(FieldKind, char),
}

/// One validated part of a student identifier.
///
/// Held inline up to 24 bytes (nearly every course, division, name and roll): parsing an
/// identifier, and copying its parts into the class and marks tables, allocate nothing, and a
/// held connection's identity costs no heap blocks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Field(CompactString);

impl Field {
    /// Validates `s` as a field of the given kind, normalised to Unicode NFC (so the composed
    /// and the decomposed spelling of a name are the same field).
    ///
    /// # Errors
    /// [`FieldError`] naming the field and the problem.
    pub fn new(kind: FieldKind, s: &str) -> Result<Self, FieldError> {
        // Most identifiers are ASCII: checked byte by byte (the same rule, restricted to ASCII).
        if s.is_ascii() {
            check_ascii(kind, s.as_bytes())?;
            return Ok(Self(CompactString::new(s)));
        }
        // Unicode text is compared in its composed form (NFC): `Café` typed with a precomposed
        // `é` and with `e` + a combining accent is one name, one class, one roll.
        if unicode_normalization::is_nfc(s) {
            check_chars(kind, s)?;
            return Ok(Self(CompactString::new(s)));
        }
        let composed: CompactString = s.nfc().collect();
        check_chars(kind, &composed)?;
        Ok(Self(composed))
    }

    /// The value.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// The field rule for any text.
fn check_chars(kind: FieldKind, s: &str) -> Result<(), FieldError> {
    let mut chars = s.chars();
    let first = chars.next().ok_or(FieldError::Empty(kind))?;
    if !first.is_alphanumeric() {
        return Err(FieldError::BadChar(kind, first));
    }
    let mut count = 1;
    for c in chars {
        let allowed = c.is_alphanumeric()
            || matches!(c, '-' | '.' | '\'')
            || unicode_normalization::char::is_combining_mark(c);
        if !allowed {
            return Err(FieldError::BadChar(kind, c));
        }
        count += 1;
    }
    if count > kind.max_chars() {
        return Err(FieldError::TooLong(kind));
    }
    Ok(())
}

/// [`check_chars`] for ASCII text, a byte at a time.
/// The bytes a field may hold after its first: ASCII letters and digits, `-`, `.` and `'`. A
/// table, as every JOIN checks every byte of four fields.
const FIELD_REST: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < table.len() {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'\'';
        b += 1;
    }
    table
};

fn check_ascii(kind: FieldKind, bytes: &[u8]) -> Result<(), FieldError> {
    let (&first, rest) = bytes.split_first().ok_or(FieldError::Empty(kind))?;
    if !first.is_ascii_alphanumeric() {
        return Err(FieldError::BadChar(kind, char::from(first)));
    }
    if let Some(&bad) = rest.iter().find(|&&b| !FIELD_REST[usize::from(b)]) {
        return Err(FieldError::BadChar(kind, char::from(bad)));
    }
    if bytes.len() > kind.max_chars() {
        return Err(FieldError::TooLong(kind));
    }
    Ok(())
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a `COURSE_DIV_NAME_ROLL` string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Not four `_`-separated parts.
    #[error("expected COURSE_DIV_NAME_ROLL (four parts separated by _), got {0} part(s)")]
    Parts(usize),
    /// One part was invalid.
    #[error(transparent)]
    Field(#[from] FieldError),
}

/// A class: the pair (course, division). Students of one class hear each other's announcements.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassKey {
    /// The course.
    pub course: Field,
    /// The division.
    pub division: Field,
}

impl fmt::Display for ClassKey {
    /// `course division`, the form used in protocol lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.course, self.division)
    }
}

/// A student's identifier: `COURSE_DIV_NAME_ROLL`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StudentId {
    /// The class the student checks into.
    pub class: ClassKey,
    /// The student's name.
    pub name: Field,
    /// The student's roll number, unique within a class.
    pub roll: Field,
}

impl StudentId {
    /// Builds an identifier from its four parts, validating each.
    ///
    /// # Errors
    /// [`IdError::Field`] for the first invalid part.
    pub fn from_parts(
        course: &str,
        division: &str,
        name: &str,
        roll: &str,
    ) -> Result<Self, IdError> {
        Ok(Self {
            class: ClassKey {
                course: Field::new(FieldKind::Course, course)?,
                division: Field::new(FieldKind::Division, division)?,
            },
            name: Field::new(FieldKind::Name, name)?,
            roll: Field::new(FieldKind::Roll, roll)?,
        })
    }

    /// The course.
    pub fn course(&self) -> &Field {
        &self.class.course
    }

    /// The division.
    pub fn division(&self) -> &Field {
        &self.class.division
    }
}

impl fmt::Display for StudentId {
    /// `COURSE_DIV_NAME_ROLL`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{}_{}_{}",
            self.class.course, self.class.division, self.name, self.roll
        )
    }
}

impl FromStr for StudentId {
    type Err = IdError;
    /// Parses `COURSE_DIV_NAME_ROLL`; one trailing `_` (as the original client sent) is allowed.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.strip_suffix('_').unwrap_or(s);
        let [course, division, name, roll] = four_parts(s).map_err(IdError::Parts)?;
        Self::from_parts(course, division, name, roll)
    }
}

/// The four `_`-separated parts of `s`, or how many parts it has. One pass over the bytes, no
/// collection (this runs for every JOIN). `_` is ASCII, and no byte of a multi-byte character
/// is, so every cut falls between characters.
fn four_parts(s: &str) -> Result<[&str; 4], usize> {
    let mut cuts = [0usize; 3];
    let mut found = 0;
    for (i, b) in s.bytes().enumerate() {
        if b == b'_' {
            if let Some(cut) = cuts.get_mut(found) {
                *cut = i;
            }
            found += 1;
        }
    }
    let parts = found + 1;
    if parts != 4 {
        return Err(parts);
    }
    let [a, b, c] = cuts;
    match (s.get(..a), s.get(a + 1..b), s.get(b + 1..c), s.get(c + 1..)) {
        (Some(course), Some(division), Some(name), Some(roll)) => {
            Ok([course, division, name, roll])
        }
        _ => Err(parts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The byte-wise split finds the same parts (or part count) as `str::split`.
        #[test]
        fn four_parts_agrees_with_split(s in "[a-z_\u{e9}\u{1f600} ]{0,12}") {
            let split: Vec<&str> = s.split('_').collect();
            match four_parts(&s) {
                Ok(parts) => prop_assert_eq!(parts.to_vec(), split),
                Err(n) => {
                    prop_assert_ne!(split.len(), 4);
                    prop_assert_eq!(n, split.len());
                }
            }
        }

        /// The ASCII fast path applies exactly the general rule.
        #[test]
        fn the_ascii_check_agrees_with_the_general_one(s in prop_oneof!["[ -~]{0,40}", "[A-Za-z0-9.'-]{0,40}"]) {
            for kind in [FieldKind::Course, FieldKind::Division, FieldKind::Name, FieldKind::Roll] {
                prop_assert_eq!(check_ascii(kind, s.as_bytes()), check_chars(kind, &s));
            }
        }
    }

    #[test]
    fn parses_the_original_shape_and_unicode_names() {
        let id: StudentId = "ComputerNetworks_Div1_JayPatel_18BCP043"
            .parse()
            .expect("valid");
        assert_eq!(id.name.as_str(), "JayPatel");
        assert_eq!(id.to_string(), "ComputerNetworks_Div1_JayPatel_18BCP043");
        assert!("CN_D1_José_1".parse::<StudentId>().is_ok());
        assert!("CN_D1_李雷_1".parse::<StudentId>().is_ok());
        assert!("CN_D1_O'Brien_1".parse::<StudentId>().is_ok());
        assert!("CN_D1_Zoë_1_".parse::<StudentId>().is_ok());
        assert!(
            "CN_D1_स्वाति_1".parse::<StudentId>().is_ok(),
            "Devanagari with a virama"
        );
        assert!(
            "CN_D1_ก้อง_1".parse::<StudentId>().is_ok(),
            "Thai with a tone mark"
        );
        assert!(
            "CN_D1_Zoe\u{308}_1".parse::<StudentId>().is_ok(),
            "decomposed diaeresis"
        );
        assert!(
            "CN_D1_\u{308}Zoe_1".parse::<StudentId>().is_err(),
            "a mark cannot come first"
        );
    }

    #[test]
    fn composed_and_decomposed_spellings_are_one_identifier() {
        let nfc: StudentId = "Caf\u{e9}_D1_Ren\u{e9}e_1".parse().expect("valid");
        let nfd: StudentId = "Cafe\u{301}_D1_Rene\u{301}e_1".parse().expect("valid");
        assert_eq!(nfc, nfd);
        assert_eq!(nfd.class.course.as_str(), "Caf\u{e9}", "stored composed");
        assert_eq!(nfd.to_string(), "Caf\u{e9}_D1_Ren\u{e9}e_1");
        // The length limit counts the composed form: 64 × "é" decomposed is 128 chars.
        let long = "e\u{301}".repeat(64);
        assert!(format!("a_b_{long}_d").parse::<StudentId>().is_ok());
    }

    #[test]
    fn refuses_wrong_part_counts_and_bad_characters() {
        assert_eq!("a_b_c".parse::<StudentId>(), Err(IdError::Parts(3)));
        assert_eq!(
            "a_b__d".parse::<StudentId>(),
            Err(IdError::Field(FieldError::Empty(FieldKind::Name)))
        );
        assert!(matches!(
            "=cmd_b_c_d".parse::<StudentId>(),
            Err(IdError::Field(FieldError::BadChar(FieldKind::Course, '=')))
        ));
        assert!("a_b_c d_e".parse::<StudentId>().is_err());
        assert!(
            format!("a_b_{}_d", "n".repeat(65))
                .parse::<StudentId>()
                .is_err()
        );
        assert!(
            format!("a_b_{}_d", "n".repeat(64))
                .parse::<StudentId>()
                .is_ok()
        );
    }
}
