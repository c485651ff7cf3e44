//! Metric names out of PromQL, the alert YAML and the dashboard JSON, without a YAML crate.

use super::*;

// ------------------------------------------------------------------------------ the parsers

/// Every series name the exposition can produce: the `# TYPE` families with the sample
/// suffixes of their type. Only names (not families) are returned, so a bare counter or
/// histogram family name is not in the set, as it is not in Prometheus either.
pub(crate) fn exported_series(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(family), Some(kind)) = (words.next(), words.next()) else {
            panic!("malformed TYPE line {line:?}");
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_count", "_sum", "_created"],
            "gaugehistogram" => &["_bucket", "_gcount", "_gsum"],
            "summary" => &["", "_count", "_sum", "_created"],
            "info" => &["_info"],
            // gauge, stateset, unknown: the family name is the series name.
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{family}{suffix}"));
        }
    }
    names
}

/// The `wsfleet_…` metric names a PromQL expression (or a Grafana `label_values(…)` query)
/// mentions, in order. String literals are skipped, so a label value that happens to start
/// with `wsfleet_` is not taken for a metric.
pub(crate) fn metric_names(expr: &str) -> Vec<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if matches!(c, '"' | '\'' | '`') {
            // A string literal: skip to its closing quote (backslash escapes, except in raw
            // backtick strings).
            while let Some(inner) = chars.next() {
                if inner == '\\' && c != '`' {
                    chars.next();
                } else if inner == c {
                    break;
                }
            }
        } else if is_ident(c) {
            let mut ident = String::from(c);
            while let Some(&next) = chars.peek() {
                if !is_ident(next) {
                    break;
                }
                ident.push(next);
                chars.next();
            }
            if ident.starts_with("wsfleet_") {
                names.push(ident);
            }
        }
    }
    names
}

/// The value of a one-line YAML scalar, without its quotes.
pub(crate) fn yaml_scalar(raw: &str) -> String {
    let raw = raw.trim();
    if raw.len() >= 2 && raw.starts_with('\'') && raw.ends_with('\'') {
        raw[1..raw.len() - 1].replace("''", "'")
    } else if raw.len() >= 2 && raw.starts_with('"') && raw.ends_with('"') {
        raw[1..raw.len() - 1]
            .replace("\\\"", "\"")
            .replace("\\\\", "\\")
    } else {
        raw.to_string()
    }
}

/// The values of every `key:` in a YAML file, read as text: a one-line scalar, or a block
/// scalar (`|`, `>`, with chomping indicators) made of the following lines indented deeper
/// than the key.
pub(crate) fn yaml_values(text: &str, key: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let prefix = format!("{key}:");
    let mut values = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start().trim_start_matches("- ");
        i += 1;
        let Some(rest) = trimmed.strip_prefix(&prefix) else {
            continue;
        };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let indent = line.len() - line.trim_start().len();
            let mut block = Vec::new();
            while i < lines.len() {
                let next = lines[i];
                let next_indent = next.len() - next.trim_start().len();
                if !next.trim().is_empty() && next_indent <= indent {
                    break;
                }
                block.push(next.trim());
                i += 1;
            }
            values.push(block.join("\n").trim().to_string());
        } else {
            values.push(yaml_scalar(rest));
        }
    }
    values
}

/// Every query string of a Grafana dashboard: the panels' `expr` and the template
/// variables' `query`/`definition`, wherever they are nested (rows, library panels).
pub(crate) fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    pub(crate) fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner) {
                        ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                        _ => walk(inner, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

/// GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to `-`.
pub(crate) fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

pub(crate) fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Metric name → the queries (from `source`) that use it.
pub(crate) type Uses = BTreeMap<String, Vec<String>>;

pub(crate) fn uses_of(queries: &[String], source: &str, uses: &mut Uses) {
    for query in queries {
        for name in metric_names(query) {
            uses.entry(name)
                .or_default()
                .push(format!("{source}: {}", query.replace('\n', " ")));
        }
    }
}

/// Panics with every unknown name and where it is used, over all the sources at once.
pub(crate) fn assert_all_exported(sources: &[&Uses], exported: &BTreeSet<String>) {
    let unknown: Vec<String> = sources
        .iter()
        .flat_map(|uses| uses.iter())
        .filter(|(name, _)| !exported.contains(*name))
        .map(|(name, places)| format!("  {name}\n      used in {}", places.join("\n      and ")))
        .collect();
    assert!(
        unknown.is_empty(),
        "the dashboard or the alert rules query metrics wsfleet does not export (renamed or \
         removed in src/metrics.rs? a new labelled family must also be exercised in \
         scrape_a_real_node):\n{}\n\nexported series names: {exported:?}",
        unknown.join("\n")
    );
}
