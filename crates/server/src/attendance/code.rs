//! Rotating class codes: RFC 6238 TOTP, 6 digits, 30-second steps, HMAC-SHA-1, from a
//! per-class secret kept in the state directory (mode 0600). Computed from the server's clock
//! only; the code of the current step and of the one before are accepted, so a code read off
//! the projector just before it changes still works.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// Seconds per step.
pub const STEP_SECS: i64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Bytes of a new secret (160 bits, as RFC 4226 recommends).
pub const SECRET_BYTES: usize = 20;

/// Why a class's secret could not be had.
pub type CodeError = crate::ops::private_file::PrivateFileError;

/// The code of the step that `unix_secs` falls in.
pub fn code_at(secret: &[u8], unix_secs: i64) -> u32 {
    hotp(secret, unix_secs.div_euclid(STEP_SECS))
}

/// RFC 4226 HOTP of `counter`, `DIGITS` digits.
fn hotp(secret: &[u8], counter: i64) -> u32 {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return 0;
    };
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let bin = (u32::from(digest[offset]) & 0x7f) << 24
        | u32::from(digest[offset + 1]) << 16
        | u32::from(digest[offset + 2]) << 8
        | u32::from(digest[offset + 3]);
    bin % 10u32.pow(DIGITS)
}

/// `code` as 6 digits, zero-padded, as the teacher's page shows it.
pub fn format_code(code: u32) -> String {
    format!("{code:06}")
}

/// Whether `given` is the code of the step of `unix_secs` or of the one before, compared in
/// constant time.
pub fn accepts(secret: &[u8], unix_secs: i64, given: &str) -> bool {
    if given.len() != 6 || !given.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let step = unix_secs.div_euclid(STEP_SECS);
    let mut ok = subtle::Choice::from(0);
    for s in [step, step - 1] {
        let want = format_code(hotp(secret, s));
        ok |= want.as_bytes().ct_eq(given.as_bytes());
    }
    ok.into()
}

/// Seconds until the code shown at `unix_secs` changes.
pub fn seconds_to_next(unix_secs: i64) -> i64 {
    STEP_SECS - unix_secs.rem_euclid(STEP_SECS)
}

/// The secret of class `course`/`division`: the file `code-<course>_<division>.secret` in
/// `dir`, created with 20 random bytes (mode 0600) if missing.
///
/// # Errors
/// [`CodeError`] if it cannot be read or created, or is readable by others.
pub fn load_or_create_secret(
    dir: &Path,
    course: &str,
    division: &str,
) -> Result<Vec<u8>, CodeError> {
    let path = dir.join(format!("code-{course}_{division}.secret"));
    crate::ops::private_file::load_or_create(&path, SECRET_BYTES)
}

/// The check-in link the QR code carries: the student page with the class and code filled in.
pub fn checkin_link(base_url: &str, course: &str, division: &str, code: u32) -> String {
    format!(
        "{}/?class={course}_{division}&code={}",
        base_url.trim_end_matches('/'),
        format_code(code)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B's SHA-1 secret.
    const RFC: &[u8] = b"12345678901234567890";

    #[test]
    fn the_rfc_6238_vectors_hold_in_six_digits() {
        // The RFC's 8-digit values, last six digits.
        for (t, want) in [
            (59, 287_082),
            (1_111_111_109, 81_804),
            (1_111_111_111, 50_471),
            (1_234_567_890, 5_924),
            (2_000_000_000, 279_037),
            (20_000_000_000, 353_130),
        ] {
            assert_eq!(code_at(RFC, t), want, "t = {t}");
        }
        assert_eq!(format_code(code_at(RFC, 1_234_567_890)), "005924");
    }

    #[test]
    fn the_current_and_the_previous_step_are_accepted_at_the_boundaries() {
        let at_0 = format_code(code_at(RFC, 0));
        let at_30 = format_code(code_at(RFC, 30));
        let at_60 = format_code(code_at(RFC, 60));
        assert_ne!(at_0, at_30);
        // t = 29 is the last second of step 0; 30 the first of step 1.
        assert!(accepts(RFC, 29, &at_0));
        assert!(!accepts(RFC, 29, &at_30), "a code from the future");
        assert!(accepts(RFC, 30, &at_0), "the previous step");
        assert!(accepts(RFC, 30, &at_30));
        assert!(accepts(RFC, 59, &at_0), "still the previous step");
        assert!(!accepts(RFC, 60, &at_0), "two steps old");
        assert!(accepts(RFC, 61, &at_60));
        assert_eq!(seconds_to_next(29), 1);
        assert_eq!(seconds_to_next(30), 30);
    }

    #[test]
    fn anything_but_six_digits_is_refused() {
        let now = format_code(code_at(RFC, 100));
        assert!(accepts(RFC, 100, &now));
        assert!(!accepts(RFC, 100, &now[..5]));
        assert!(!accepts(RFC, 100, &format!("{now}0")));
        assert!(!accepts(RFC, 100, "12345a"));
        assert!(!accepts(RFC, 100, ""));
    }

    #[test]
    fn a_secret_is_created_private_kept_and_refused_when_readable_by_others() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let a = load_or_create_secret(dir.path(), "CN", "D1").expect("created");
        assert_eq!(a.len(), SECRET_BYTES);
        let path = dir.path().join("code-CN_D1.secret");
        let mode = std::fs::metadata(&path).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            load_or_create_secret(dir.path(), "CN", "D1").expect("read"),
            a
        );
        let b = load_or_create_secret(dir.path(), "CN", "D2").expect("another");
        assert_ne!(a, b);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = load_or_create_secret(dir.path(), "CN", "D1").expect_err("too open");
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    #[test]
    fn the_link_carries_the_class_and_the_code() {
        assert_eq!(
            checkin_link("https://att.school.example/", "CN", "D1", 5924),
            "https://att.school.example/?class=CN_D1&code=005924"
        );
    }
}
