//! How a fatal error is printed: its chain of causes on one line, each cause
//! once (sqlx's database error repeats its driver message as its source, so
//! `{:#}` would print it twice), and any URI password redacted.

use crate::meta::redact_uris_in;

/// One line for `error` and its causes, outermost first, joined by ": ".
/// A cause whose text the line already holds is left out.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    redact_uris_in(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("error returned from database: {0}")]
    struct Wrapper(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("1045 (28000): Access denied for user 'root'")]
    struct Inner;

    #[test]
    fn each_cause_once_and_no_password() {
        let error = anyhow::Error::new(Wrapper(Inner))
            .context("cannot open metadata database mysql://root:s3cret@db:3306/m");
        assert_eq!(
            one_line(&error),
            "cannot open metadata database mysql://root:***@db:3306/m: \
             error returned from database: 1045 (28000): Access denied for user 'root'"
        );
    }
}
