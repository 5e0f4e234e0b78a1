//! How an error is printed: its chain of causes on one line, each cause
//! once (sqlx's database error repeats its driver message as its source, so
//! `{:#}` would print it twice), and any URI password redacted.

use crate::meta::redact_uris_in;

/// One line for `error` and its causes, outermost first, joined by ": ".
/// A cause whose text the line already holds is left out.
pub fn one_line(error: &anyhow::Error) -> String {
    joined(error.chain().map(ToString::to_string))
}

/// [`one_line`] for a gRPC status: its message, then its sources, which
/// keep the reason of a failed connection (a TLS alert, say).
pub fn status_line(status: &tonic::Status) -> String {
    let sources = std::iter::successors(std::error::Error::source(status), |e| e.source());
    joined(std::iter::once(status.message().to_string()).chain(sources.map(ToString::to_string)))
}

fn joined(texts: impl Iterator<Item = String>) -> String {
    let mut line = String::new();
    for text in texts {
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

    #[test]
    fn a_status_with_its_sources() {
        let status = tonic::Status::from_error(Box::new(Wrapper(Inner)));
        assert_eq!(
            status_line(&status),
            "error returned from database: 1045 (28000): Access denied for user 'root'"
        );
        let plain = tonic::Status::unavailable("connection refused");
        assert_eq!(status_line(&plain), "connection refused");
    }
}
