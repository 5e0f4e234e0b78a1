//! The one parser of metadata-database URIs (the node's Milvus `meta_uri` and
//! the proxy's `meta.uri`): it checks a MySQL or SQLite URI, says what is wrong
//! without ever echoing a password, and gives the URL sqlx connects to.

use std::path::Path;

use super::Dialect;

/// Milvus' placeholder for "the default SQLite file" (`sqlite://:@:/`).
const MILVUS_SQLITE_PLACEHOLDER: &str = ":@:/";

const EXPECTED: &str =
    "expected mysql://user[:password]@host[:port]/database, sqlite://PATH or sqlite::memory:";

/// Which database a metadata URI names. Its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub enum MetaLocation {
    /// `mysql://user[:password]@host[:port]/database[?options]`; user and
    /// password as written (percent-encoded); port defaults to 3306.
    MySql {
        user: String,
        password: Option<String>,
        host: String,
        port: u16,
        database: String,
    },
    /// `sqlite://PATH[?options]` in the sqlx convention: `sqlite://meta.sqlite`
    /// is relative to the working directory, `sqlite:///var/milvus/meta.sqlite` absolute.
    Sqlite { path: String },
    /// `sqlite::memory:` (tests).
    SqliteInMemory,
}

/// A checked metadata URI and what sqlx connects to. Its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct MetaUri {
    pub location: MetaLocation,
    /// The URL handed to sqlx.
    pub sqlx_url: String,
}

impl std::fmt::Debug for MetaLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetaLocation::MySql {
                user,
                password,
                host,
                port,
                database,
            } => f
                .debug_struct("MySql")
                .field("user", user)
                .field("password", &password.as_ref().map(|_| "***"))
                .field("host", host)
                .field("port", port)
                .field("database", database)
                .finish(),
            MetaLocation::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            MetaLocation::SqliteInMemory => f.write_str("SqliteInMemory"),
        }
    }
}

impl std::fmt::Debug for MetaUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaUri")
            .field("location", &self.location)
            .field("sqlx_url", &redacted(&self.sqlx_url))
            .finish()
    }
}

impl MetaUri {
    /// Parses `mysql://user[:pass]@host[:port]/db`, `sqlite://PATH` or
    /// `sqlite::memory:`. `default_sqlite_path` replaces Milvus' placeholder
    /// form `sqlite://:@:/` (and an empty path); without one, those are errors.
    pub fn parse(uri: &str, default_sqlite_path: Option<&Path>) -> Result<Self, String> {
        let uri = uri.trim();
        if uri == "sqlite::memory:" {
            return Ok(MetaUri {
                location: MetaLocation::SqliteInMemory,
                sqlx_url: uri.to_string(),
            });
        }
        if let Some(rest) = uri.strip_prefix("sqlite://") {
            return parse_sqlite(uri, rest, default_sqlite_path);
        }
        parse_mysql(uri)
    }

    pub fn dialect(&self) -> Dialect {
        match self.location {
            MetaLocation::MySql { .. } => Dialect::MySql,
            MetaLocation::Sqlite { .. } | MetaLocation::SqliteInMemory => Dialect::Sqlite,
        }
    }
}

fn parse_sqlite(uri: &str, rest: &str, default_path: Option<&Path>) -> Result<MetaUri, String> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = if path.is_empty() || path == MILVUS_SQLITE_PLACEHOLDER {
        match default_path {
            Some(default) => default.display().to_string(),
            None => {
                return Err(format!(
                    "a SQLite URI needs a file path, e.g. \"sqlite:///var/lib/milvus/db/meta.sqlite\", got {:?}",
                    redacted(uri)
                ))
            }
        }
    } else {
        path.to_string()
    };
    let sqlx_url = sqlite_sqlx_url(&path, query);
    Ok(MetaUri {
        location: MetaLocation::Sqlite { path },
        sqlx_url,
    })
}

/// `mode=rwc` (create the file when missing) joined to the URI's own options,
/// unless they already choose a `mode`.
fn sqlite_sqlx_url(path: &str, query: &str) -> String {
    let sets_mode = query
        .split('&')
        .any(|pair| pair.split('=').next() == Some("mode"));
    match (query.is_empty(), sets_mode) {
        (true, _) => format!("sqlite://{path}?mode=rwc"),
        (false, true) => format!("sqlite://{path}?{query}"),
        (false, false) => format!("sqlite://{path}?{query}&mode=rwc"),
    }
}

fn parse_mysql(uri: &str) -> Result<MetaUri, String> {
    let shown = redacted(uri);
    match uri.split_once("://").map(|(scheme, _)| scheme) {
        Some("mysql") => {}
        Some(scheme) if scheme.contains('+') && is_scheme(scheme) => {
            return Err(format!(
                "{EXPECTED}; drop the SQLAlchemy driver suffix from {scheme:?}, got {shown:?}"
            ))
        }
        _ => return Err(format!("{EXPECTED}, got {shown:?}")),
    }
    let url = url::Url::parse(uri).map_err(|err| format!("{EXPECTED}; {err} in {shown:?}"))?;
    if url.username().is_empty() {
        return Err(format!("{EXPECTED}; the user is missing in {shown:?}"));
    }
    let host = url.host_str().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{EXPECTED}; the host is missing in {shown:?}"));
    }
    let database = url.path().trim_start_matches('/');
    if database.is_empty() || database.contains('/') {
        return Err(format!(
            "{EXPECTED}; the database name is missing or invalid in {shown:?}"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!("{EXPECTED}; unexpected '#' in {shown:?}"));
    }
    Ok(MetaUri {
        location: MetaLocation::MySql {
            user: url.username().to_string(),
            password: url.password().map(str::to_string),
            host: host.to_string(),
            port: url.port().unwrap_or(3306),
            database: database.to_string(),
        },
        sqlx_url: uri.to_string(),
    })
}

/// Whether `text` has only the characters of a URL scheme (RFC 3986), so it
/// cannot be part of a password.
fn is_scheme(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `uri` with its password (if any) replaced by `***`, for messages and logs.
/// Works on text that is not a valid URL too: everything between the first
/// `:` of the user part and the last `@` is hidden, so in doubt it hides more.
pub fn redacted(uri: &str) -> String {
    let authority_start = match uri.find("://") {
        Some(at) if is_scheme(&uri[..at]) => at + "://".len(),
        _ => 0,
    };
    let rest = &uri[authority_start..];
    let Some(user_end) = rest.rfind('@') else {
        return uri.to_string();
    };
    let Some(colon) = rest[..user_end].find(':') else {
        return uri.to_string();
    };
    let password_start = authority_start + colon + 1;
    let password_end = authority_start + user_end;
    if password_start == password_end {
        return uri.to_string();
    }
    format!("{}***{}", &uri[..password_start], &uri[password_end..])
}

/// `text` with the password of every `scheme://user:password@` in it
/// replaced by `***`: the last line of defence for error text that may quote
/// a URI (a driver's message, a wrapped error), before it is printed.
pub fn redact_uris_in(text: &str) -> String {
    static USERINFO: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let pattern = USERINFO.get_or_init(|| {
        regex::Regex::new(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s\[\]]*):[^@\s]+@").ok()
    });
    match pattern {
        Some(re) => re.replace_all(text, "${head}:***@").into_owned(),
        // Unreachable (the pattern is a constant); hide every `://...@` then.
        None => text.replace("://", "://***@"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_password() {
        let uri = MetaUri::parse("mysql://root:s3cretPW@127.0.0.1:3306/milvus", None).unwrap();
        let text = format!("{uri:?} {:?} {uri:#?}", uri.location);
        assert!(!text.contains("s3cretPW"), "{text}");
        assert!(
            text.contains("root") && text.contains("127.0.0.1"),
            "{text}"
        );
    }

    #[test]
    fn uris_inside_text_are_redacted() {
        let text = "cannot open mysql://root:pa:ss@db:3306/m (was sqlite:///x, also mysql://u@h/d)";
        let help = "expected mysql://user[:password]@host[:port]/database";
        assert_eq!(redact_uris_in(help), help);
        assert_eq!(
            redact_uris_in(text),
            "cannot open mysql://root:***@db:3306/m (was sqlite:///x, also mysql://u@h/d)"
        );
    }

    #[test]
    fn parses_meta_uris() {
        let m = MetaUri::parse("mysql://root:123456@127.0.0.1:3306/milvus", None).unwrap();
        assert_eq!(m.dialect(), Dialect::MySql);
        let s = MetaUri::parse("sqlite:///tmp/x/meta.sqlite", None).unwrap();
        assert_eq!(s.sqlx_url, "sqlite:///tmp/x/meta.sqlite?mode=rwc");
        let d = MetaUri::parse(
            "sqlite://:@:/",
            Some(std::path::Path::new("/d/meta.sqlite")),
        )
        .unwrap();
        assert_eq!(d.sqlx_url, "sqlite:///d/meta.sqlite?mode=rwc");
        assert!(MetaUri::parse("sqlite://:@:/", None).is_err());
        assert!(MetaUri::parse("mysql://root@127.0.0.1:3306", None).is_err());
        assert!(MetaUri::parse("postgres://x", None).is_err());
    }

    #[test]
    fn meta_uri_forms() {
        let parse_meta_uri = |uri: &str| MetaUri::parse(uri, None).map(|uri| uri.location);
        assert_eq!(
            parse_meta_uri("mysql://root:pass@127.0.0.1:3306/milvus"),
            Ok(MetaLocation::MySql {
                user: "root".to_string(),
                password: Some("pass".to_string()),
                host: "127.0.0.1".to_string(),
                port: 3306,
                database: "milvus".to_string(),
            })
        );
        assert!(matches!(
            parse_meta_uri("mysql://root@db/milvus"),
            Ok(MetaLocation::MySql {
                port: 3306,
                password: None,
                ..
            })
        ));
        assert_eq!(
            parse_meta_uri("sqlite::memory:"),
            Ok(MetaLocation::SqliteInMemory)
        );
        assert_eq!(
            parse_meta_uri("sqlite://meta.sqlite?mode=rwc"),
            Ok(MetaLocation::Sqlite {
                path: "meta.sqlite".to_string()
            })
        );
        for bad in [
            "mysql://127.0.0.1:3306/milvus",
            "mysql://root@127.0.0.1:3306/",
            "mysql://root@127.0.0.1:99999/milvus",
            "mysql+pymysql://root@h/db",
            "sqlite://",
            "sqlite://:@:/",
            "postgres://u@h/db",
            "milvus",
        ] {
            assert!(parse_meta_uri(bad).is_err(), "{bad} should be rejected");
        }
        assert!(parse_meta_uri("mysql+pymysql://root@h/db")
            .unwrap_err()
            .contains("driver suffix"));
    }

    #[test]
    fn sqlite_options_are_kept_beside_the_create_mode() {
        let url = |uri: &str| MetaUri::parse(uri, None).unwrap().sqlx_url;
        assert_eq!(url("sqlite://m.sqlite"), "sqlite://m.sqlite?mode=rwc");
        assert_eq!(
            url("sqlite://m.sqlite?mode=ro"),
            "sqlite://m.sqlite?mode=ro"
        );
        assert_eq!(
            url("sqlite://m.sqlite?cache=shared"),
            "sqlite://m.sqlite?cache=shared&mode=rwc"
        );
        assert_eq!(url("sqlite::memory:"), "sqlite::memory:");
        let placeholder = MetaUri::parse("sqlite://:@:/?cache=shared", Some(Path::new("/d/m")));
        assert_eq!(
            placeholder.unwrap().sqlx_url,
            "sqlite:///d/m?cache=shared&mode=rwc"
        );
    }

    #[test]
    fn redacted_hides_only_the_password() {
        assert_eq!(
            redacted("mysql://root:s3cret@db:3306/milvus"),
            "mysql://root:***@db:3306/milvus"
        );
        assert_eq!(redacted("mysql://root@db/milvus"), "mysql://root@db/milvus");
        assert_eq!(redacted("mysql://:s3cret@db/m"), "mysql://:***@db/m");
        assert_eq!(redacted("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(redacted("sqlite://:@:/"), "sqlite://:@:/", "no password");
        assert_eq!(redacted("root:s3cret@db/milvus"), "root:***@db/milvus");
        assert_eq!(redacted("mysql://u:p@ss:w@rd@h/db"), "mysql://u:***@h/db");
    }

    #[test]
    fn errors_never_show_the_password() {
        let secret = "s3cretPW";
        let bad = [
            "postgres://root:s3cretPW@db/milvus",
            "mysql+pymysql://root:s3cretPW@db/milvus",
            "mysql://:s3cretPW@db/milvus",
            "mysql://root:s3cretPW@/milvus",
            "mysql://root:s3cretPW@db/",
            "mysql://root:s3cretPW@db/milvus/extra",
            "mysql://root:s3cretPW@db:99999/milvus",
            "mysql://root:s3cretPW@db:port/milvus",
            "mysql://root:s3cretPW@db/milvus#frag",
            "mysql://root:s3cretPW@db",
            "root:s3cretPW@db/milvus",
            "root:s3cretPW@db://milvus",
        ];
        for uri in bad {
            let error = MetaUri::parse(uri, None).expect_err(uri);
            assert!(!error.contains(secret), "{uri}: {error}");
            assert!(error.contains("expected"), "{uri}: {error}");
        }
    }
}
