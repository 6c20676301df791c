//! Takes libpq's TLS parameters out of a connection string. tokio-postgres rejects
//! `sslrootcert` and the `verify-ca`/`verify-full` modes, so dqetl reads them itself and leaves
//! the rest of the string, untouched, to tokio-postgres.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use percent_encoding::percent_decode_str;

use super::TlsSettings;
use super::error::PgError;
use super::sslmode::SslMode;

/// Where an sslmode from a connection string came from, for errors.
const ORIGIN: &str = "the connection string";

/// Splits a `postgres://` URL or a `key=value` string into the string without `sslmode` and
/// `sslrootcert`, and the TLS settings they held. Text that does not parse is left in place for
/// tokio-postgres to report.
pub(crate) fn split_tls_params(conn: &str) -> Result<(String, TlsSettings), PgError> {
    let prefix = ["postgres://", "postgresql://"]
        .into_iter()
        .find(|p| conn.starts_with(p));
    match prefix {
        Some(prefix) => split_url(conn, prefix.len()),
        None => split_key_value(conn),
    }
}

fn split_url(conn: &str, prefix_len: usize) -> Result<(String, TlsSettings), PgError> {
    let body = &conn[prefix_len..];
    // As in tokio-postgres, the credentials end at the first `@`: a `?` in a password does not
    // start the parameters.
    let search_from = body.find('@').map_or(0, |at| at + 1);
    let Some(question) = body[search_from..].find('?').map(|i| search_from + i) else {
        return Ok((conn.to_string(), TlsSettings::default()));
    };
    let head = &conn[..prefix_len + question];
    let mut tls = TlsSettings::default();
    let mut kept = Vec::new();
    for param in body[question + 1..].split('&') {
        let Some((key, value)) = param.split_once('=') else {
            kept.push(param);
            continue;
        };
        match percent_decode_str(key).decode_utf8_lossy().as_ref() {
            "sslmode" => {
                let value = percent_decode_str(value).decode_utf8_lossy();
                tls.mode = Some(SslMode::parse(&value, ORIGIN)?);
            }
            "sslrootcert" => {
                let bytes: Vec<u8> = percent_decode_str(value).collect();
                tls.root_cert = Some(PathBuf::from(OsString::from_vec(bytes)));
            }
            _ => kept.push(param),
        }
    }
    let rest = if kept.is_empty() {
        head.to_string()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    Ok((rest, tls))
}

fn split_key_value(conn: &str) -> Result<(String, TlsSettings), PgError> {
    let mut tls = TlsSettings::default();
    let mut kept = Vec::new();
    let mut rest = conn.trim_start();
    while !rest.is_empty() {
        let Some((key, value, pair_len)) = next_pair(rest) else {
            kept.push(rest);
            break;
        };
        match key {
            "sslmode" => tls.mode = Some(SslMode::parse(&value, ORIGIN)?),
            "sslrootcert" => tls.root_cert = Some(PathBuf::from(value)),
            _ => kept.push(&rest[..pair_len]),
        }
        rest = rest[pair_len..].trim_start();
    }
    Ok((kept.join(" "), tls))
}

/// The first `key = value` of `s` (which starts with the key): the key, the unescaped value
/// and the length of the pair's text. None when it is malformed.
fn next_pair(s: &str) -> Option<(&str, String, usize)> {
    let key_end = s
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(s.len());
    let key = &s[..key_end];
    if key.is_empty() {
        return None;
    }
    let after_eq = s[key_end..].trim_start().strip_prefix('=')?.trim_start();
    let (value, value_len) = value(after_eq)?;
    Some((key, value, s.len() - after_eq.len() + value_len))
}

/// A value as libpq reads it: `'quoted'` or up to the next whitespace, `\` escaping the next
/// character. Returns the value and the length of its text.
fn value(s: &str) -> Option<(String, usize)> {
    let mut value = String::new();
    let quoted = s.starts_with('\'');
    let mut chars = s.char_indices().skip(usize::from(quoted));
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' if quoted => return Some((value, i + 1)),
            c if c.is_whitespace() && !quoted => return Some((value, i)),
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    // The end of the string ends a plain value; a quoted one must be closed.
    (!quoted && !value.is_empty()).then_some((value, s.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(conn: &str) -> (String, TlsSettings) {
        split_tls_params(conn).unwrap()
    }

    #[test]
    fn a_url_keeps_its_other_parameters_and_loses_the_tls_ones() {
        let (rest, tls) = split(
            "postgres://app@db.example:5432/etldb?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Frds%20ca.pem",
        );
        assert_eq!(
            rest,
            "postgres://app@db.example:5432/etldb?application_name=x"
        );
        assert_eq!(tls.mode, Some(SslMode::VerifyFull));
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/rds ca.pem")));
    }

    #[test]
    fn a_url_with_only_tls_parameters_loses_its_question_mark() {
        let (rest, tls) = split("postgresql://app@h/db?sslmode=verify-ca");
        assert_eq!(rest, "postgresql://app@h/db");
        assert_eq!(tls.mode, Some(SslMode::VerifyCa));
        let (rest, tls) = split("postgresql://app@h/db");
        assert_eq!(rest, "postgresql://app@h/db");
        assert_eq!(tls, TlsSettings::default());
    }

    #[test]
    fn a_question_mark_in_the_password_does_not_start_the_parameters() {
        let (rest, tls) = split("postgres://app:pa?ss@h/db?sslmode=require");
        assert_eq!(rest, "postgres://app:pa?ss@h/db");
        assert_eq!(tls.mode, Some(SslMode::Require));
    }

    #[test]
    fn a_key_value_string_keeps_quoted_and_escaped_values_as_written() {
        let (rest, tls) = split(
            "host=h  password='it\\'s ok' sslmode = verify-full dbname=a\\ b sslrootcert='/etc/my ca.pem'",
        );
        assert_eq!(rest, "host=h password='it\\'s ok' dbname=a\\ b");
        assert_eq!(tls.mode, Some(SslMode::VerifyFull));
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/my ca.pem")));
    }

    #[test]
    fn the_rest_of_a_key_value_string_still_parses() {
        let (rest, _) = split("host=127.0.0.1 port=5433 sslmode=verify-ca user=postgres dbname=x");
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_ports(), [5433]);
        assert_eq!(config.get_user(), Some("postgres"));
        assert_eq!(config.get_dbname(), Some("x"));
    }

    #[test]
    fn a_malformed_tail_is_left_for_tokio_postgres_to_report() {
        let (rest, tls) = split("sslmode=require host='unterminated");
        assert_eq!(rest, "host='unterminated");
        assert_eq!(tls.mode, Some(SslMode::Require));
        assert!(rest.parse::<tokio_postgres::Config>().is_err());
    }

    #[test]
    fn a_wrong_sslmode_in_a_connection_string_is_named() {
        for conn in [
            "postgres://h/db?sslmode=verify_full",
            "host=h sslmode=verify_full",
        ] {
            let err = split_tls_params(conn).unwrap_err().to_string();
            assert!(err.contains("\"verify_full\""), "{err}");
            assert!(err.contains("the connection string"), "{err}");
        }
    }
}
