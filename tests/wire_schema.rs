//! The compiled `proto/*.proto` must describe exactly the wire schema of
//! pymilvus 1.1.2: every enum value, message field (number, name, label,
//! type, oneof) and RPC path, rendered like `dump-wire-schema.py` and compared
//! with `tests/data/milvus-1.1-wire-schema.txt`.
#![allow(clippy::unwrap_used)] // tests and benches unwrap their own fixtures

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    FileDescriptorSet,
};

/// The files in the order the Python dump prints them.
const FILE_ORDER: [&str; 2] = ["status.proto", "milvus.proto"];

const REFERENCE: &str = include_str!("data/milvus-1.1-wire-schema.txt");

/// `.milvus.grpc.Status` -> `milvus.grpc.Status`.
fn full_name(type_name: &str) -> &str {
    type_name.strip_prefix('.').unwrap_or(type_name)
}

/// `.milvus.grpc.Status` -> `Status`.
fn short_name(type_name: &str) -> &str {
    type_name.rsplit('.').next().unwrap_or(type_name)
}

fn qualified(package: &str, name: &str) -> String {
    if package.is_empty() {
        name.to_string()
    } else {
        format!("{package}.{name}")
    }
}

/// The type column of the dump: a message's full name, `enum <full name>`,
/// or the lower-case scalar name (`TYPE_INT64` -> `int64`).
fn type_text(field: &FieldDescriptorProto) -> String {
    match field.r#type() {
        Type::Message | Type::Group => full_name(field.type_name()).to_string(),
        Type::Enum => format!("enum {}", full_name(field.type_name())),
        scalar => scalar
            .as_str_name()
            .trim_start_matches("TYPE_")
            .to_lowercase(),
    }
}

fn render_enum(package: &str, e: &EnumDescriptorProto, out: &mut Vec<String>) {
    let values: Vec<String> = e
        .value
        .iter()
        .map(|v| format!("{}={}", v.name(), v.number()))
        .collect();
    out.push(format!(
        "enum {}: {}",
        qualified(package, e.name()),
        values.join(", ")
    ));
}

fn render_message(package: &str, m: &DescriptorProto, out: &mut Vec<String>) {
    out.push(format!("message {}", qualified(package, m.name())));
    let mut fields: Vec<&FieldDescriptorProto> = m.field.iter().collect();
    fields.sort_by_key(|f| f.number());
    for f in fields {
        let label = if f.label() == Label::Repeated {
            "repeated "
        } else {
            ""
        };
        let oneof = f
            .oneof_index
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| m.oneof_decl.get(i))
            .map(|o| format!(" (oneof {})", o.name()))
            .unwrap_or_default();
        out.push(format!(
            "  {}: {} {label}{}{oneof}",
            f.number(),
            f.name(),
            type_text(f)
        ));
    }
}

fn render_file(file: &FileDescriptorProto, out: &mut Vec<String>) {
    let package = file.package();
    let syntax = match file.syntax() {
        "" => "proto2",
        s => s,
    };
    out.push(format!("# {}: package {package}, {syntax}", file.name()));
    for e in &file.enum_type {
        render_enum(package, e, out);
    }
    for m in &file.message_type {
        render_message(package, m, out);
    }
    for service in &file.service {
        let service_name = qualified(package, service.name());
        for method in &service.method {
            out.push(format!(
                "rpc {}({}) -> {}   path=/{service_name}/{}",
                method.name(),
                short_name(method.input_type()),
                short_name(method.output_type()),
                method.name()
            ));
        }
    }
}

/// The whole descriptor set in the dump's text format, one entry per line.
fn render(set: &FileDescriptorSet) -> Vec<String> {
    let mut out = Vec::new();
    for name in FILE_ORDER {
        let file = set
            .file
            .iter()
            .find(|f| f.name() == name)
            .unwrap_or_else(|| panic!("{name} is missing from the compiled descriptor set"));
        render_file(file, &mut out);
    }
    out
}

/// A readable report of the lines that differ (at most `limit` of them).
fn differences(expected: &[&str], actual: &[String], limit: usize) -> Vec<String> {
    let mut report = Vec::new();
    let lines = expected.len().max(actual.len());
    for i in 0..lines {
        let want = expected.get(i).copied();
        let got = actual.get(i).map(String::as_str);
        if want != got {
            report.push(format!(
                "line {}:\n  reference: {}\n  compiled:  {}",
                i + 1,
                want.unwrap_or("<none>"),
                got.unwrap_or("<none>")
            ));
            if report.len() == limit {
                report.push("...".to_string());
                break;
            }
        }
    }
    report
}

fn compiled_schema() -> Vec<String> {
    let set = FileDescriptorSet::decode(mishards::wire::FILE_DESCRIPTOR_SET)
        .expect("the embedded descriptor set decodes");
    render(&set)
}

#[test]
fn compiled_schema_matches_pymilvus_1_1_2() {
    let expected: Vec<&str> = REFERENCE.lines().collect();
    let actual = compiled_schema();
    let diff = differences(&expected, &actual, 20);
    assert!(
        diff.is_empty(),
        "the compiled wire schema differs from tests/data/milvus-1.1-wire-schema.txt \
         ({} reference lines, {} compiled lines):\n{}",
        expected.len(),
        actual.len(),
        diff.join("\n")
    );
}

#[test]
fn the_descriptor_set_holds_only_the_two_milvus_files() {
    let set = FileDescriptorSet::decode(mishards::wire::FILE_DESCRIPTOR_SET)
        .expect("the embedded descriptor set decodes");
    let mut names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    names.sort_unstable();
    assert_eq!(names, vec!["milvus.proto", "status.proto"]);
}

/// The comparison itself must notice a changed field number, type or name.
#[test]
fn a_changed_field_is_detected() {
    let mut set = FileDescriptorSet::decode(mishards::wire::FILE_DESCRIPTOR_SET)
        .expect("the embedded descriptor set decodes");
    let expected: Vec<&str> = REFERENCE.lines().collect();
    fn search_param(set: &mut FileDescriptorSet) -> &mut DescriptorProto {
        set.file
            .iter_mut()
            .flat_map(|f| f.message_type.iter_mut())
            .find(|m| m.name() == "SearchParam")
            .expect("SearchParam is declared")
    }

    search_param(&mut set).field[3].number = Some(40);
    let diff = differences(&expected, &render(&set), 20);
    assert!(
        diff.iter().any(|d| d.contains("40: topk int64")),
        "{diff:?}"
    );

    search_param(&mut set).field[3].number = Some(4);
    search_param(&mut set).field[3].set_type(Type::Int32);
    let diff = differences(&expected, &render(&set), 20);
    assert!(diff.iter().any(|d| d.contains("4: topk int32")), "{diff:?}");

    search_param(&mut set).field[3].set_type(Type::Int64);
    search_param(&mut set).field[3].name = Some("top_k".to_string());
    let diff = differences(&expected, &render(&set), 20);
    assert!(
        diff.iter().any(|d| d.contains("4: top_k int64")),
        "{diff:?}"
    );

    search_param(&mut set).field[3].name = Some("topk".to_string());
    assert!(differences(&expected, &render(&set), 20).is_empty());
}
