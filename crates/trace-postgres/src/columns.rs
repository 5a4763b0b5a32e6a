//! One declaration per table of the rows a batch inserts: [`table_rows!`] turns a list of columns (name, Rust type,
//! PostgreSQL element type) into the column-vector struct, its `INSERT ... SELECT FROM UNNEST(...)` statement and the
//! binding of its vectors, so a column is named once on the Rust side and the three cannot drift apart.

/// A column filled from a bound array.
#[derive(Debug)]
pub(crate) struct Column {
    pub name: &'static str,
    /// The element type of the bound array (`$n::{pg_type}[]`).
    pub pg_type: &'static str,
    /// The type the value is cast to on insert, when it differs (text sent for a jsonb column).
    pub cast: Option<&'static str>,
}

/// A column computed from the bound ones (`expression` uses their names, qualified by `u.`).
#[derive(Debug)]
pub(crate) struct Derived {
    pub name: &'static str,
    pub expression: &'static str,
}

/// The statement inserting one batch of rows of `table`, idempotently: rows already stored are skipped.
pub(crate) fn insert_statement(table: &str, columns: &[Column], derived: &[Derived]) -> String {
    let targets = columns.iter().map(|c| c.name).chain(derived.iter().map(|d| d.name)).collect::<Vec<_>>().join(", ");
    let values = columns
        .iter()
        .map(|c| match c.cast {
            Some(cast) => format!("u.{}::{cast}", c.name),
            None => format!("u.{}", c.name),
        })
        .chain(derived.iter().map(|d| d.expression.to_owned()))
        .collect::<Vec<_>>()
        .join(", ");
    let arrays =
        columns.iter().enumerate().map(|(i, c)| format!("${}::{}[]", i + 1, c.pg_type)).collect::<Vec<_>>().join(", ");
    let aliases = columns.iter().map(|c| c.name).collect::<Vec<_>>().join(", ");
    format!(
        "INSERT INTO {table} ({targets}) SELECT {values} FROM UNNEST({arrays}) AS u({aliases}) ON CONFLICT DO NOTHING"
    )
}

/// Declares `struct $rows` holding one `Vec` per column of `$table`, with `COLUMNS`, `DERIVED`, `insert_sql()`,
/// `bind()` and `is_empty()`.
macro_rules! table_rows {
    (
        $(#[$meta:meta])*
        $rows:ident => $table:literal {
            $( $field:ident : $ty:ty = $pg:literal $(as $cast:literal)? ),+ $(,)?
        }
        $( derived { $( $derived:ident = $expression:literal ),+ $(,)? } )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub(crate) struct $rows {
            $( pub $field: Vec<$ty>, )+
        }

        impl $rows {
            pub(crate) const TABLE: &'static str = $table;
            pub(crate) const COLUMNS: &'static [$crate::columns::Column] = &[
                $( $crate::columns::Column {
                    name: stringify!($field),
                    pg_type: $pg,
                    cast: table_rows!(@cast $($cast)?),
                }, )+
            ];
            pub(crate) const DERIVED: &'static [$crate::columns::Derived] = &[
                $($( $crate::columns::Derived { name: stringify!($derived), expression: $expression }, )+)?
            ];

            /// The statement that inserts these rows (built once).
            pub(crate) fn insert_sql() -> &'static str {
                static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                    $crate::columns::insert_statement($rows::TABLE, $rows::COLUMNS, $rows::DERIVED)
                });
                SQL.as_str()
            }

            /// Binds every column vector, in the order of [`Self::COLUMNS`].
            pub(crate) fn bind<'q>(
                &'q self,
                query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
            ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
                query $( .bind(&self.$field) )+
            }

            /// The number of rows (every column vector has this length).
            #[allow(dead_code, reason = "not every table is asked")]
            pub(crate) fn len(&self) -> usize {
                let lengths = [$( self.$field.len() ),+];
                lengths[0]
            }

            #[allow(dead_code, reason = "not every table is asked")]
            pub(crate) fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }
    };
    (@cast) => { None };
    (@cast $cast:literal) => { Some($cast) };
}

pub(crate) use table_rows;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::{CodeRows, EventRows, LatencyRows, ModelRows, RunRows};

    const SCHEMA: &str = include_str!("../migrations/20261125000001_trajectory_store.sql");

    /// The columns of `table` in the migration's `CREATE TABLE`: name and type, spelt as an array element type.
    fn schema_columns(table: &str) -> Vec<(String, &'static str)> {
        let start = SCHEMA.find(&format!("CREATE TABLE IF NOT EXISTS {table} (")).unwrap();
        let body = &SCHEMA[start..];
        let body = &body[body.find('(').unwrap() + 1..body.find("\n);").unwrap()];
        body.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with("--") && !line.starts_with("PRIMARY KEY"))
            .map(|line| {
                let mut words = line.split_whitespace();
                let name = words.next().unwrap().to_owned();
                let pg_type = match words.next().unwrap().trim_end_matches(',') {
                    "timestamptz" => "timestamptz",
                    "uuid" => "uuid",
                    "integer" => "int4",
                    "bigint" => "int8",
                    "double" => "float8",
                    "boolean" => "bool",
                    "text" => "text",
                    "jsonb" => "jsonb",
                    other => panic!("{table}.{name}: unmapped type {other}"),
                };
                (name, pg_type)
            })
            .collect()
    }

    #[test]
    fn every_declared_column_exists_in_the_schema_once() {
        let tables: [(&str, &[Column], &[Derived]); 5] = [
            (EventRows::TABLE, EventRows::COLUMNS, EventRows::DERIVED),
            (LatencyRows::TABLE, LatencyRows::COLUMNS, LatencyRows::DERIVED),
            (ModelRows::TABLE, ModelRows::COLUMNS, ModelRows::DERIVED),
            (CodeRows::TABLE, CodeRows::COLUMNS, CodeRows::DERIVED),
            (RunRows::TABLE, RunRows::COLUMNS, RunRows::DERIVED),
        ];
        for (table, columns, derived) in tables {
            let schema = schema_columns(table);
            assert!(schema.len() > 5, "{table}: {schema:?}");
            let declared: Vec<&str> = columns.iter().map(|c| c.name).chain(derived.iter().map(|d| d.name)).collect();
            for name in &declared {
                assert!(schema.iter().any(|(s, _)| s == name), "{table}.{name} is not in the schema {schema:?}");
                assert_eq!(declared.iter().filter(|d| *d == name).count(), 1, "{table}.{name} declared twice");
            }
            for column in columns {
                let (_, stored) = schema.iter().find(|(s, _)| s == column.name).unwrap();
                assert_eq!(
                    column.cast.unwrap_or(column.pg_type),
                    *stored,
                    "{table}.{} has the wrong type",
                    column.name
                );
            }
        }
    }

    #[test]
    fn the_statement_names_each_bound_array_in_order() {
        let columns = [
            Column { name: "time", pg_type: "timestamptz", cast: None },
            Column { name: "event", pg_type: "text", cast: Some("jsonb") },
        ];
        let derived = [Derived { name: "start_time", expression: "u.time" }];
        assert_eq!(
            insert_statement("t", &columns, &derived),
            "INSERT INTO t (time, event, start_time) SELECT u.time, u.event::jsonb, u.time \
             FROM UNNEST($1::timestamptz[], $2::text[]) AS u(time, event) ON CONFLICT DO NOTHING"
        );
    }
}
