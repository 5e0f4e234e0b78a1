//! Fixtures shared by the configuration unit tests: the example file, a
//! minimal valid file, environment lookups and error keys.

use super::ConfigError;

pub const EXAMPLE: &str = include_str!("../../config/mishards.toml");

pub fn no_env(_: &str) -> Option<String> {
    None
}

pub fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        pairs
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
    }
}

pub const MINIMAL: &str = r#"
[meta]
uri = "mysql://root:pass@127.0.0.1:3306/milvus"
[backends]
writable = "10.0.0.1:19530"
"#;

pub fn keys(errors: &[ConfigError]) -> Vec<&str> {
    errors.iter().map(|error| error.key.as_str()).collect()
}
