//! [`Script`]: several statements of one write transaction sent in one round trip.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, Arguments as _, AssertSqlSafe, Encode, Type};

use crate::{DbError, Dialect, backend};

/// Several statements sent to the database in one round trip, inside a write transaction
/// that already holds the authority lock ([`crate::Write`]).
///
/// On SQLite the statements are joined with `;` and run in order (sqlx binds the values across
/// them in order). PostgreSQL takes one statement per round trip, so every statement becomes a
/// data-modifying common table expression of one query: all of them run, on one snapshot
/// and in no defined order, so no statement of a script may read what another one writes.
/// The statements of a script therefore touch different tables (or, for reads, tables the
/// script does not write).
///
/// Placeholders come from [`param`](Self::param) and [`values`](Self::values), each used once,
/// and each one's value is bound with [`bind`](Self::bind) in the same order. On SQLite they
/// are anonymous (`?`): sqlx looks up the name of every numbered one, and SQLite finds a name
/// by a linear search, which made binding a batch of a thousand values quadratic.
pub struct Script {
    dialect: Dialect,
    statements: Vec<String>,
    arguments: AnyArguments,
    placeholders: usize,
    /// A value could not be encoded; the script is refused when run.
    bind_failed: bool,
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the bound values: they may be secrets' digests or users' ids.
        f.debug_struct("Script")
            .field("statements", &self.statements)
            .finish_non_exhaustive()
    }
}

impl Script {
    /// An empty script for `dialect`.
    pub fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            statements: Vec::new(),
            arguments: AnyArguments::default(),
            placeholders: 0,
            bind_failed: false,
        }
    }

    /// The engine the script is written for.
    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The next placeholder (`?` on SQLite, `$N` on PostgreSQL), to use once.
    pub fn param(&mut self) -> String {
        let mut sql = String::new();
        self.push_param(&mut sql);
        sql
    }

    /// The next placeholders, as the rows of a `VALUES` list: `($1, $2), ($3, $4)`.
    pub fn values(&mut self, rows: usize, columns: usize) -> String {
        let mut sql = String::with_capacity(rows * columns * 5);
        for row in 0..rows {
            sql.push_str(if row > 0 { ", (" } else { "(" });
            for column in 0..columns {
                if column > 0 {
                    sql.push_str(", ");
                }
                self.push_param(&mut sql);
            }
            sql.push(')');
        }
        sql
    }

    fn push_param(&mut self, sql: &mut String) {
        use std::fmt::Write as _;
        self.placeholders += 1;
        match self.dialect {
            Dialect::Sqlite => sql.push('?'),
            Dialect::Postgres => {
                let _ = write!(sql, "${}", self.placeholders);
            }
        }
    }

    /// Adds `INSERT INTO {target} VALUES …` for `rows` rows of `columns` values, with
    /// [`Dialect::insert_verb`]; bind the values next, row by row.
    pub fn insert_values(&mut self, target: &str, rows: usize, columns: usize) {
        let values = self.values(rows, columns);
        let verb = self.dialect.insert_verb();
        self.statements.push(format!("{verb} {target} VALUES {values}"));
    }

    /// Adds a statement whose placeholders came from this script.
    pub fn push(&mut self, sql: String) {
        self.statements.push(sql);
    }

    /// Puts a statement without placeholders first.
    pub fn prepend(&mut self, sql: &str) {
        debug_assert!(!sql.contains(['$', '?']), "a prepended statement takes no values");
        self.statements.insert(0, sql.to_owned());
    }

    /// Binds the value of the next placeholder.
    pub fn bind<'t, T: Encode<'t, Any> + Type<Any>>(&mut self, value: T) -> &mut Self {
        if self.arguments.add(value).is_err() {
            self.bind_failed = true;
        }
        self
    }

    /// Runs the statements (of which only the effects count).
    pub async fn execute(self, conn: &mut AnyConnection) -> Result<(), DbError> {
        let Some((last, rest)) = self.statements.split_last() else {
            return Ok(());
        };
        let sql = match self.dialect {
            Dialect::Sqlite => self.statements.join(";\n"),
            Dialect::Postgres if rest.is_empty() => last.clone(),
            Dialect::Postgres => format!("WITH {} {last}", Self::expressions(rest)),
        };
        self.query(sql)?.execute(conn).await.map_err(backend)?;
        Ok(())
    }

    /// Runs the statements, each of which returns rows of two text columns, `kind` and
    /// `value`, and returns all the rows (on SQLite in statement order; on PostgreSQL in no
    /// defined order).
    pub async fn fetch_all(self, conn: &mut AnyConnection) -> Result<Vec<AnyRow>, DbError> {
        if self.statements.is_empty() {
            return Ok(Vec::new());
        }
        let sql = match self.dialect {
            Dialect::Sqlite => self.statements.join(";\n"),
            Dialect::Postgres => {
                let selects: Vec<String> = (0..self.statements.len())
                    .map(|i| format!("SELECT kind, value FROM s{i}"))
                    .collect();
                format!(
                    "WITH {} {}",
                    Self::expressions(&self.statements),
                    selects.join(" UNION ALL ")
                )
            }
        };
        self.query(sql)?.fetch_all(conn).await.map_err(backend)
    }

    /// The query `sql` (these statements, as the engine takes them) with the bound values,
    /// once every placeholder has its value.
    fn query(self, sql: String) -> Result<Query<'static, Any, AnyArguments>, DbError> {
        if self.bind_failed || self.arguments.len() != self.placeholders {
            return Err(DbError::Corrupt("a statement's values do not match its placeholders"));
        }
        Ok(sqlx::query_with(AssertSqlSafe(sql), self.arguments))
    }

    /// `s0 AS (…), s1 AS (…)`.
    fn expressions(statements: &[String]) -> String {
        statements
            .iter()
            .enumerate()
            .map(|(i, statement)| format!("s{i} AS ({statement})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
