//! What a database holds, read from its catalog: tables with their columns, primary
//! keys and foreign keys, and the SQL that hashes and counts their rows alike on both
//! sides.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, Result};
use tokio_postgres::Client;

/// Schemas never copied: PostgreSQL's own, and the journal's.
pub const JOURNAL_SCHEMA: &str = "stackmigrate";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// As `format_type` prints it (`character varying(20)`, `public.status`).
    pub type_name: String,
    /// Values computed by the server (`GENERATED ALWAYS AS`): never copied, never set.
    pub generated: bool,
    /// `GENERATED ALWAYS AS IDENTITY`: written with `OVERRIDING SYSTEM VALUE`.
    pub identity_always: bool,
    /// A type outside `pg_catalog` (`schema.name`), which a created table needs first.
    pub user_type: Option<String>,
    /// That type is an enum, which the copy can create from the source's labels.
    pub user_enum: bool,
}

impl Column {
    fn is_integer(&self) -> bool {
        matches!(self.type_name.as_str(), "smallint" | "integer" | "bigint")
    }
}

#[derive(Debug, Clone)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    /// Tables (`schema.table`) this one's foreign keys point to.
    pub references: BTreeSet<String>,
    /// How its rows are hashed: as the journal has it once the table is journalled.
    pub hash: RowHash,
}

/// How a row's content hash is computed. Journalled per table: a journal's hashes are
/// compared with the rows' at every later run and at rollback, so they never change kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RowHash {
    /// 64 bits of the MD5 of the row's text: any type, any server version.
    #[default]
    Md5Text,
    /// `hash_record_extended` (PostgreSQL 14 and later) of the values themselves,
    /// about five times cheaper than printing and hashing the text; only for types
    /// whose hash depends on the value alone on any server (see `hashes_by_value`).
    Record,
}

impl RowHash {
    /// As the journal names it.
    pub fn name(self) -> &'static str {
        match self {
            RowHash::Md5Text => "md5",
            RowHash::Record => "record",
        }
    }

    pub fn from_name(name: &str) -> Result<RowHash> {
        match name {
            "md5" => Ok(RowHash::Md5Text),
            "record" => Ok(RowHash::Record),
            other => anyhow::bail!(
                "the journal hashes rows as {other:?}, which this release does not know: a newer stackmigrate wrote it; run that version"
            ),
        }
    }
}

/// Whether PostgreSQL's hash of a value of this type (as `format_type` prints it) is
/// the same on every server for the same value: built-in scalars and arrays of them.
/// Not enums (hashed by their label's OID, different in each database), `json`, or
/// types without a hash function.
fn hashes_by_value(type_name: &str) -> bool {
    if let Some(element) = type_name.strip_suffix("[]") {
        return hashes_by_value(element);
    }
    const EXACT: &[&str] = &[
        "smallint",
        "integer",
        "bigint",
        "boolean",
        "text",
        "bytea",
        "jsonb",
        "uuid",
        "date",
        "real",
        "double precision",
        "interval",
        "timestamp without time zone",
        "timestamp with time zone",
        "time without time zone",
        "time with time zone",
        "inet",
        "character",
        "character varying",
        "numeric",
    ];
    // `numeric(20,0)`, `timestamp(3) with time zone`: the type without its modifier.
    let unmodified = match (type_name.find('('), type_name.find(')')) {
        (Some(open), Some(close)) if open < close => {
            format!("{}{}", &type_name[..open], &type_name[close + 1..])
        }
        _ => type_name.to_string(),
    };
    EXACT.contains(&unmodified.as_str())
}

/// The rows of a table one transaction copies: all, or a range of its primary key's
/// first column, an integer (`lo <= key < hi`, either end open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Slice {
    #[default]
    Whole,
    Range {
        lo: Option<i64>,
        hi: Option<i64>,
    },
}

impl Slice {
    /// The range's ends (`lo <= key < hi`); none for the whole table.
    pub fn bounds(&self) -> (Option<i64>, Option<i64>) {
        match *self {
            Slice::Whole => (None, None),
            Slice::Range { lo, hi } => (lo, hi),
        }
    }

    /// A condition on `alias`'s rows selecting the slice.
    pub fn filter(&self, table: &Table, alias: &str) -> String {
        let Slice::Range { lo, hi } = self else {
            return "true".to_string();
        };
        let column = table
            .range_column()
            .map(|c| format!("{alias}.{}", quote(&c.name)))
            .expect("ranges are made only of tables whose key starts with an integer");
        // An open end is closed at bigint's limit: a planner without statistics (a table
        // being filled) takes a bound on both sides for a narrow range and reads it by
        // index, a bound on one side for a third of the table and reads all of it.
        match (lo, hi) {
            (None, None) => "true".to_string(),
            (lo, hi) => format!(
                "{column} >= {} AND {column} {}",
                lo.map_or(format!("'{}'::bigint", i64::MIN), |lo| lo.to_string()),
                hi.map_or(format!("<= '{}'::bigint", i64::MAX), |hi| format!("< {hi}")),
            ),
        }
    }

    /// `count` ranges of about equal width over keys `min..=max`, the first open below
    /// and the last open above, so together they hold every row whatever is added later.
    pub fn ranges(min: i64, max: i64, count: u64) -> Vec<Slice> {
        let span = (max as i128 - min as i128 + 1).max(1);
        let count = (count as i128).clamp(1, span);
        let width = (span + count - 1) / count;
        let bounds: Vec<i64> = (1..count)
            .map(|i| (min as i128 + i * width) as i64)
            .filter(|b| (*b as i128) <= max as i128)
            .collect();
        let mut slices = Vec::with_capacity(bounds.len() + 1);
        let mut lo = None;
        for hi in bounds {
            slices.push(Slice::Range { lo, hi: Some(hi) });
            lo = Some(hi);
        }
        slices.push(Slice::Range { lo, hi: None });
        slices
    }
}

/// `"a""b"`: an identifier as SQL writes it.
pub fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// A string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl Table {
    /// `schema.table`, as globs and messages name it.
    pub fn key(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    pub fn sql_name(&self) -> String {
        format!("{}.{}", quote(&self.schema), quote(&self.name))
    }

    /// The columns a copy writes: all but generated ones.
    pub fn copied(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| !c.generated)
    }

    pub fn column_list(&self) -> String {
        self.copied()
            .map(|c| quote(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `alias.col, ...` of the copied columns.
    pub fn columns_of(&self, alias: &str) -> String {
        self.copied()
            .map(|c| format!("{alias}.{}", quote(&c.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A row's key as JSON (`[1]`, `["a", 2]`): what the journal keys rows by.
    pub fn key_expr(&self, alias: &str) -> String {
        let columns: Vec<String> = self
            .primary_key
            .iter()
            .map(|c| format!("{alias}.{}", quote(c)))
            .collect();
        format!("jsonb_build_array({})", columns.join(", "))
    }

    /// The primary key's columns when it is one or two integer columns, which a fill
    /// journals as integers rather than jsonb.
    pub fn integer_key(&self) -> Option<&[String]> {
        let integer = |name: &String| {
            self.columns
                .iter()
                .any(|c| &c.name == name && c.is_integer())
        };
        match self.primary_key.len() {
            1 | 2 if self.primary_key.iter().all(integer) => Some(&self.primary_key),
            _ => None,
        }
    }

    /// A row's content hash over its copied columns (a bigint, see `RowHash`): equal on
    /// both sides for equal values, whatever the rows' order or physical layout.
    pub fn hash_expr(&self, alias: &str) -> String {
        match self.hash {
            RowHash::Md5Text => format!(
                "('x' || left(md5(ROW({})::text), 16))::bit(64)::bigint",
                self.columns_of(alias)
            ),
            RowHash::Record => format!("hash_record_extended(ROW({}), 0)", self.columns_of(alias)),
        }
    }

    /// The cheapest hash both servers compute alike for this table's rows.
    pub fn cheapest_hash(&self, both_servers_14_or_later: bool) -> RowHash {
        match both_servers_14_or_later
            && self
                .copied()
                .all(|c| c.user_type.is_none() && hashes_by_value(&c.type_name))
        {
            true => RowHash::Record,
            false => RowHash::Md5Text,
        }
    }

    /// One query for the number of rows (of `slice`) and the sum of their hashes (as
    /// text: a numeric).
    pub fn count_and_hash_sql(&self, slice: &Slice) -> String {
        format!(
            "SELECT count(*), COALESCE(sum({})::text, '0') FROM {} AS r WHERE {}",
            self.hash_expr("r"),
            self.sql_name(),
            slice.filter(self, "r")
        )
    }

    /// The primary key's first column when it is an integer: large tables are copied in
    /// ranges of it (the key's index serves them; rows sharing a value share a range).
    pub fn range_column(&self) -> Option<&Column> {
        let key = self.primary_key.first()?;
        self.columns
            .iter()
            .find(|c| &c.name == key)
            .filter(|c| c.is_integer())
    }

    /// Columns written by UPDATE: not the key, not generated, not `ALWAYS` identities.
    pub fn updatable(&self) -> impl Iterator<Item = &Column> {
        self.copied()
            .filter(|c| !c.identity_always && !self.primary_key.contains(&c.name))
    }

    /// This table with only `names`' columns, in that order: how the journal's hashes
    /// saw it (the source's columns), whatever else the target table holds.
    pub fn hashed_as(&self, names: &[String], hash: RowHash) -> Table {
        Table {
            hash,
            columns: names
                .iter()
                .filter_map(|n| self.columns.iter().find(|c| &c.name == n).cloned())
                .collect(),
            ..self.clone()
        }
    }
}

/// Every ordinary table outside PostgreSQL's schemas and the journal's.
pub async fn tables(client: &Client) -> Result<BTreeMap<String, Table>> {
    let columns = client
        .query(
            "SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), \
                    a.attgenerated <> '', a.attidentity = 'a', \
                    CASE WHEN tn.nspname <> 'pg_catalog' THEN tn.nspname || '.' || t.typname END, \
                    t.typtype = 'e' \
             FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             JOIN pg_type t ON t.oid = a.atttypid \
             JOIN pg_namespace tn ON tn.oid = t.typnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1) \
               AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' \
             ORDER BY n.nspname, c.relname, a.attnum",
            &[&JOURNAL_SCHEMA],
        )
        .await
        .context("reading the tables' columns")?;
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    for row in columns {
        let (schema, name): (String, String) = (row.get(0), row.get(1));
        let table = tables
            .entry(format!("{schema}.{name}"))
            .or_insert_with(|| Table {
                schema,
                name,
                columns: Vec::new(),
                primary_key: Vec::new(),
                references: BTreeSet::new(),
                hash: RowHash::default(),
            });
        table.columns.push(Column {
            name: row.get(2),
            type_name: row.get(3),
            generated: row.get(4),
            identity_always: row.get(5),
            user_type: row.get(6),
            user_enum: row.get(7),
        });
    }
    let keys = client
        .query(
            "SELECT n.nspname || '.' || c.relname, a.attname \
             FROM pg_constraint k \
             JOIN pg_class c ON c.oid = k.conrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             CROSS JOIN LATERAL unnest(k.conkey) WITH ORDINALITY AS u(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = u.attnum \
             WHERE k.contype = 'p' ORDER BY 1, u.ord",
            &[],
        )
        .await
        .context("reading the tables' primary keys")?;
    for row in keys {
        if let Some(table) = tables.get_mut(&row.get::<_, String>(0)) {
            table.primary_key.push(row.get(1));
        }
    }
    let references = client
        .query(
            "SELECT cn.nspname || '.' || c.relname, fn.nspname || '.' || f.relname \
             FROM pg_constraint k \
             JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace \
             JOIN pg_class f ON f.oid = k.confrelid JOIN pg_namespace fn ON fn.oid = f.relnamespace \
             WHERE k.contype = 'f' AND k.conrelid <> k.confrelid",
            &[],
        )
        .await
        .context("reading the tables' foreign keys")?;
    for row in references {
        if let Some(table) = tables.get_mut(&row.get::<_, String>(0)) {
            table.references.insert(row.get(1));
        }
    }
    Ok(tables)
}

/// Tables in the order foreign keys allow writing them: every table after the tables it
/// references (among `tables`), in levels whose tables can be written at once. A cycle
/// ends up in one level.
pub fn levels(tables: &[&Table]) -> Vec<Vec<String>> {
    let names: BTreeSet<String> = tables.iter().map(|t| t.key()).collect();
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut levels = Vec::new();
    while placed.len() < names.len() {
        let ready: Vec<String> = tables
            .iter()
            .filter(|t| !placed.contains(&t.key()))
            .filter(|t| {
                t.references
                    .iter()
                    .all(|r| r == &t.key() || !names.contains(r) || placed.contains(r))
            })
            .map(|t| t.key())
            .collect();
        let level = match ready.is_empty() {
            // A cycle: the rest together.
            true => names.difference(&placed).cloned().collect(),
            false => ready,
        };
        placed.extend(level.iter().cloned());
        levels.push(level);
    }
    levels
}

/// The labels of an enum type, in order.
pub async fn enum_labels(client: &Client, qualified: &str) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid \
             JOIN pg_namespace n ON n.oid = t.typnamespace \
             WHERE n.nspname || '.' || t.typname = $1 ORDER BY e.enumsortorder",
            &[&qualified],
        )
        .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// Which of these `schema.name` types exist.
pub async fn existing_types(client: &Client, names: &BTreeSet<String>) -> Result<BTreeSet<String>> {
    let names: Vec<&String> = names.iter().collect();
    let rows = client
        .query(
            "SELECT n.nspname || '.' || t.typname FROM pg_type t \
             JOIN pg_namespace n ON n.oid = t.typnamespace \
             WHERE n.nspname || '.' || t.typname = ANY($1)",
            &[&names],
        )
        .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// Which schemas exist.
pub async fn existing_schemas(client: &Client) -> Result<BTreeSet<String>> {
    let rows = client
        .query("SELECT nspname FROM pg_namespace", &[])
        .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// The rows and bytes a table holds (bytes as the server stores them, without indexes).
pub async fn size(client: &Client, table: &Table) -> Result<u64> {
    let row = client
        .query_one(
            "SELECT pg_table_size($1::text::regclass)",
            &[&table.sql_name()],
        )
        .await?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

/// The sequences behind a table's serial and identity columns, by column.
pub async fn sequences(client: &Client, table: &Table) -> Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    for column in table.copied() {
        let row = client
            .query_one(
                "SELECT pg_get_serial_sequence($1, $2)",
                &[&table.sql_name(), &column.name],
            )
            .await?;
        if let Some(sequence) = row.get::<_, Option<String>>(0) {
            found.push((column.name.clone(), sequence));
        }
    }
    Ok(found)
}

/// A sequence's `last_value` and `is_called`.
pub async fn sequence_state(
    client: &impl tokio_postgres::GenericClient,
    sequence: &str,
) -> Result<(i64, bool)> {
    let row = client
        .query_one(
            &format!("SELECT last_value, is_called FROM {sequence}"),
            &[],
        )
        .await
        .with_context(|| format!("reading sequence {sequence}"))?;
    Ok((row.get(0), row.get(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(key: &str, references: &[&str]) -> Table {
        let (schema, name) = key.split_once('.').unwrap();
        Table {
            schema: schema.into(),
            name: name.into(),
            columns: vec![
                Column {
                    name: "id".into(),
                    type_name: "bigint".into(),
                    generated: false,
                    identity_always: true,
                    user_type: None,
                    user_enum: false,
                },
                Column {
                    name: "Body \"x\"".into(),
                    type_name: "text".into(),
                    generated: false,
                    identity_always: false,
                    user_type: None,
                    user_enum: false,
                },
                Column {
                    name: "len".into(),
                    type_name: "integer".into(),
                    generated: true,
                    identity_always: false,
                    user_type: None,
                    user_enum: false,
                },
            ],
            primary_key: vec!["id".into()],
            references: references.iter().map(|r| r.to_string()).collect(),
            hash: RowHash::default(),
        }
    }

    #[test]
    fn tables_are_written_after_the_tables_they_reference() {
        let documents = table("public.documents", &[]);
        let pages = table("public.pages", &["public.documents"]);
        let tasks = table(
            "public.tasks",
            &["public.documents", "public.pages", "other.gone"],
        );
        let tags = table("public.tags", &[]);
        assert_eq!(
            levels(&[&tasks, &pages, &documents, &tags]),
            [
                vec!["public.documents".to_string(), "public.tags".to_string()],
                vec!["public.pages".to_string()],
                vec!["public.tasks".to_string()],
            ]
        );
        let a = table("public.a", &["public.b"]);
        let b = table("public.b", &["public.a"]);
        assert_eq!(
            levels(&[&a, &b]),
            [vec!["public.a".to_string(), "public.b".to_string()]]
        );
    }

    #[test]
    fn ranges_cover_every_key_once_and_only_integer_keys_are_split() {
        let range = |lo, hi| Slice::Range { lo, hi };
        assert_eq!(
            Slice::ranges(1, 100, 4),
            [
                range(None, Some(26)),
                range(Some(26), Some(51)),
                range(Some(51), Some(76)),
                range(Some(76), None),
            ]
        );
        // Fewer keys than ranges asked for; one key; the whole span of bigint.
        assert_eq!(
            Slice::ranges(5, 6, 10),
            [range(None, Some(6)), range(Some(6), None)]
        );
        assert_eq!(Slice::ranges(7, 7, 3), [range(None, None)]);
        assert_eq!(
            Slice::ranges(i64::MIN, i64::MAX, 2),
            [range(None, Some(0)), range(Some(0), None)]
        );
        let documents = table("public.documents", &[]);
        assert_eq!(
            range(Some(-3), Some(9)).filter(&documents, "r"),
            r#"r."id" >= -3 AND r."id" < 9"#
        );
        assert_eq!(
            range(None, Some(9)).filter(&documents, "r"),
            r#"r."id" >= '-9223372036854775808'::bigint AND r."id" < 9"#
        );
        assert_eq!(
            range(Some(-3), None).filter(&documents, "r"),
            r#"r."id" >= -3 AND r."id" <= '9223372036854775807'::bigint"#
        );
        assert_eq!(range(None, None).filter(&documents, "r"), "true");
        assert_eq!(Slice::Whole.filter(&documents, "r"), "true");
        let mut pages = table("public.pages", &[]);
        pages.primary_key = vec!["Body \"x\"".into(), "id".into()];
        assert!(pages.range_column().is_none(), "a text key is not split");
        pages.primary_key = vec!["id".into(), "Body \"x\"".into()];
        assert_eq!(pages.range_column().unwrap().name, "id");
        assert!(
            pages.integer_key().is_none(),
            "a key with text is journalled as jsonb"
        );
        pages.primary_key = vec!["id".into(), "len".into()];
        assert_eq!(pages.integer_key().unwrap(), ["id", "len"]);
        pages.primary_key = vec!["id".into(), "len".into(), "id".into()];
        assert!(pages.integer_key().is_none(), "three columns: jsonb");
        pages.primary_key.clear();
        assert!(pages.range_column().is_none());
        assert!(pages.integer_key().is_none());
    }

    #[test]
    fn sql_quotes_names_and_leaves_generated_columns_out() {
        let t = table("public.pages", &[]);
        assert_eq!(t.column_list(), r#""id", "Body ""x""""#);
        assert_eq!(t.key_expr("r"), r#"jsonb_build_array(r."id")"#);
        assert_eq!(
            t.hash_expr("r"),
            r#"('x' || left(md5(ROW(r."id", r."Body ""x""")::text), 16))::bit(64)::bigint"#
        );
        let updatable: Vec<&str> = t.updatable().map(|c| c.name.as_str()).collect();
        assert_eq!(updatable, [r#"Body "x""#]);
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn rows_are_hashed_by_value_only_where_every_server_hashes_the_value_alike() {
        let mut t = table("public.pages", &[]);
        assert_eq!(t.cheapest_hash(true), RowHash::Record);
        assert_eq!(
            t.cheapest_hash(false),
            RowHash::Md5Text,
            "PostgreSQL 13 has no hash_record_extended"
        );
        t.hash = RowHash::Record;
        assert_eq!(
            t.hash_expr("r"),
            r#"hash_record_extended(ROW(r."id", r."Body ""x"""), 0)"#
        );
        for type_name in [
            "numeric(20,0)",
            "character varying(20)",
            "timestamp(3) with time zone",
            "text[]",
            "jsonb",
            "bytea",
        ] {
            assert!(hashes_by_value(type_name), "{type_name}");
        }
        // json has no hash function; an enum's hash is of its label's OID, which differs
        // between the two databases.
        for type_name in ["json", "point", "xml", "json[]", "tsvector"] {
            assert!(!hashes_by_value(type_name), "{type_name}");
        }
        t.columns[1].type_name = "public.task_state".into();
        t.columns[1].user_type = Some("public.task_state".into());
        t.columns[1].user_enum = true;
        assert_eq!(t.cheapest_hash(true), RowHash::Md5Text);
        // A generated column is not copied, so its type does not count.
        let mut t = table("public.pages", &[]);
        t.columns[2].type_name = "json".into();
        assert_eq!(t.cheapest_hash(true), RowHash::Record);
    }
}
