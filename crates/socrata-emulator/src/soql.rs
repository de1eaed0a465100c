//! The emulator's SoQL subset: `$select`, `$where` and `$order` as dobsob (and a careless client) send them.
//!
//! Where: comparisons (`= != <> < <= > >=`, `IS [NOT] NULL`, `IN (...)`) of fields, system fields and literals, combined
//! with `AND`, `OR`, `NOT` and parentheses. Comparisons follow SQL's three-valued logic: anything compared
//! with NULL is unknown, and unknown rows are not returned. Unknown columns are a 400 with
//! `query.soql.no-such-column`, like the real query coordinator.

use std::cmp::Ordering;

use super::{ColumnType, Dataset, Row};

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Id,
    CreatedAt,
    UpdatedAt,
    Version,
    Column(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Field(Field),
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

/// A `$where` expression, with literals already converted to the type of the field they are compared with
/// (so a type mismatch is a 400 before any row is looked at, and rows are compared without re-parsing).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `field op value`; a literal on the left is turned around. A `None` value is a NULL literal.
    Test(Field, CmpOp, Option<Val>),
    /// `field op field`.
    Fields(Field, CmpOp, Field),
    /// A comparison of two literals: always unknown here.
    Unknown,
    IsNull(Field, bool),
    /// `field IN (literal, ...)`.
    In(Field, Vec<Option<Val>>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator with its operands swapped (`a < b` is `b > a`).
    fn flipped(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            other => other,
        }
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::Ne => ord != Ordering::Equal,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::Le => ord != Ordering::Greater,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::Ge => ord != Ordering::Less,
        }
    }
}

/// A query error, reported as the query coordinator does: an error code and a message.
#[derive(Debug, Clone)]
pub struct QueryError {
    pub code: &'static str,
    pub message: String,
}

fn err(code: &'static str, message: impl Into<String>) -> QueryError {
    QueryError {
        code,
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Op(String),
    LParen,
    RParen,
    Comma,
    Star,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, QueryError> {
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '\'' {
            let mut v = String::new();
            i += 1;
            loop {
                match c.get(i) {
                    None => {
                        return Err(err(
                            "query.soql.unterminated-string",
                            "Unterminated string literal",
                        ))
                    }
                    Some('\'') if c.get(i + 1) == Some(&'\'') => {
                        v.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&x) => {
                        v.push(x);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(v));
        } else if ch.is_ascii_digit()
            || (ch == '-' && c.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            i += 1;
            while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.') {
                i += 1;
            }
            let t: String = c[start..i].iter().collect();
            out.push(Tok::Num(t.parse().map_err(|_| {
                err("query.soql.bad-number", format!("Bad number {t}"))
            })?));
        } else if ch.is_alphabetic() || ch == '_' || ch == ':' || ch == '@' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || matches!(c[i], '_' | ':' | '@')) {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else if ch == '(' {
            out.push(Tok::LParen);
            i += 1;
        } else if ch == ')' {
            out.push(Tok::RParen);
            i += 1;
        } else if ch == ',' {
            out.push(Tok::Comma);
            i += 1;
        } else if ch == '*' {
            out.push(Tok::Star);
            i += 1;
        } else if "=!<>".contains(ch) {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            let op = if matches!(two.as_str(), "!=" | "<>" | "<=" | ">=") {
                two
            } else {
                ch.to_string()
            };
            if op == "!" {
                return Err(err("query.soql.unexpected-token", "Unexpected '!'"));
            }
            i += op.len();
            out.push(Tok::Op(op));
        } else {
            return Err(err(
                "query.soql.unexpected-token",
                format!("Unexpected character {ch:?}"),
            ));
        }
    }
    Ok(out)
}

/// Resolves a field name (`:id`, `:updated_at`, a column's fieldName) against a dataset.
pub fn resolve(ds: &Dataset, name: &str) -> Result<Field, QueryError> {
    match name {
        ":id" => Ok(Field::Id),
        ":created_at" => Ok(Field::CreatedAt),
        ":updated_at" => Ok(Field::UpdatedAt),
        ":version" => Ok(Field::Version),
        _ => ds
            .columns
            .iter()
            .position(|c| c.field_name == name)
            .map(Field::Column)
            .ok_or_else(|| {
                err(
                    "query.soql.no-such-column",
                    format!("Query coordinator error: query.soql.no-such-column; No such column: {name}"),
                )
            }),
    }
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    ds: &'a Dataset,
}

impl Parser<'_> {
    fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(kw))
    }
    fn or(&mut self) -> Result<Expr, QueryError> {
        let mut l = self.and()?;
        while self.peek_kw("or") {
            self.pos += 1;
            l = Expr::Or(Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Expr, QueryError> {
        let mut l = self.unary()?;
        while self.peek_kw("and") {
            self.pos += 1;
            l = Expr::And(Box::new(l), Box::new(self.unary()?));
        }
        Ok(l)
    }
    fn unary(&mut self) -> Result<Expr, QueryError> {
        if self.peek_kw("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.toks.get(self.pos) == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            if self.toks.get(self.pos) != Some(&Tok::RParen) {
                return Err(err("query.soql.unexpected-token", "Expected ')'"));
            }
            self.pos += 1;
            return Ok(e);
        }
        let l = self.operand()?;
        if self.peek_kw("in") {
            self.pos += 1;
            let Operand::Field(f) = l else {
                return Err(err("query.soql.type-mismatch", "IN needs a column"));
            };
            if self.toks.get(self.pos) != Some(&Tok::LParen) {
                return Err(err("query.soql.unexpected-token", "Expected '(' after IN"));
            }
            self.pos += 1;
            let mut vals = Vec::new();
            loop {
                let lit = self.operand()?;
                if matches!(lit, Operand::Field(_)) {
                    return Err(err("query.soql.type-mismatch", "IN takes literals"));
                }
                vals.push(literal_for(&f, self.ds, &lit)?);
                match self.toks.get(self.pos) {
                    Some(Tok::Comma) => self.pos += 1,
                    Some(Tok::RParen) => {
                        self.pos += 1;
                        break;
                    }
                    other => {
                        return Err(err(
                            "query.soql.unexpected-token",
                            format!("Expected ',' or ')' in IN, got {other:?}"),
                        ))
                    }
                }
            }
            return Ok(Expr::In(f, vals));
        }
        if self.peek_kw("is") {
            self.pos += 1;
            let negated = self.peek_kw("not");
            if negated {
                self.pos += 1;
            }
            if !self.peek_kw("null") {
                return Err(err("query.soql.unexpected-token", "Expected NULL after IS"));
            }
            self.pos += 1;
            let Operand::Field(f) = l else {
                return Err(err("query.soql.type-mismatch", "IS NULL needs a column"));
            };
            return Ok(Expr::IsNull(f, !negated));
        }
        let op = match self.toks.get(self.pos) {
            Some(Tok::Op(o)) => match o.as_str() {
                "=" => CmpOp::Eq,
                "!=" | "<>" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                ">" => CmpOp::Gt,
                _ => CmpOp::Ge,
            },
            other => {
                return Err(err(
                    "query.soql.unexpected-token",
                    format!("Expected a comparison operator, got {other:?}"),
                ))
            }
        };
        self.pos += 1;
        let r = self.operand()?;
        Ok(match (l, r) {
            (Operand::Field(f), Operand::Field(g)) => Expr::Fields(f, op, g),
            (Operand::Field(f), lit) => {
                let v = literal_for(&f, self.ds, &lit)?;
                Expr::Test(f, op, v)
            }
            (lit, Operand::Field(f)) => {
                let v = literal_for(&f, self.ds, &lit)?;
                Expr::Test(f, op.flipped(), v)
            }
            _ => Expr::Unknown,
        })
    }
    fn operand(&mut self) -> Result<Operand, QueryError> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        match t {
            Some(Tok::Str(s)) => Ok(Operand::Str(s)),
            Some(Tok::Num(n)) => Ok(Operand::Num(n)),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("true") => Ok(Operand::Bool(true)),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("false") => Ok(Operand::Bool(false)),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("null") => Ok(Operand::Null),
            Some(Tok::Ident(s)) => Ok(Operand::Field(resolve(self.ds, &s)?)),
            other => Err(err(
                "query.soql.unexpected-token",
                format!("Unexpected {other:?}"),
            )),
        }
    }
}

pub fn parse_where(ds: &Dataset, s: &str) -> Result<Expr, QueryError> {
    let mut p = Parser {
        toks: tokenize(s)?,
        pos: 0,
        ds,
    };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(err(
            "query.soql.unexpected-token",
            format!("Unexpected {:?}", p.toks[p.pos]),
        ));
    }
    Ok(e)
}

/// What `$select` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    Fields(Vec<(String, Field)>),
    Count,
}

pub fn parse_select(ds: &Dataset, s: &str) -> Result<Selection, QueryError> {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.eq_ignore_ascii_case("count(*)") {
        return Ok(Selection::Count);
    }
    let mut out = Vec::new();
    for part in compact.split(',') {
        match part {
            ":*" => {
                for (n, f) in [
                    (":id", Field::Id),
                    (":version", Field::Version),
                    (":created_at", Field::CreatedAt),
                    (":updated_at", Field::UpdatedAt),
                ] {
                    out.push((n.to_string(), f));
                }
            }
            "*" => {
                for (i, c) in ds.columns.iter().enumerate() {
                    out.push((c.field_name.clone(), Field::Column(i)));
                }
            }
            "" => return Err(err("query.soql.unexpected-token", "Empty select item")),
            name => out.push((name.to_string(), resolve(ds, name)?)),
        }
    }
    Ok(Selection::Fields(out))
}

pub fn parse_order(ds: &Dataset, s: &str) -> Result<Vec<(Field, bool)>, QueryError> {
    s.split(',')
        .map(|part| {
            let mut words = part.split_whitespace();
            let name = words
                .next()
                .ok_or_else(|| err("query.soql.unexpected-token", "Empty order item"))?;
            let desc = match words.next() {
                None => false,
                Some(w) if w.eq_ignore_ascii_case("asc") => false,
                Some(w) if w.eq_ignore_ascii_case("desc") => true,
                Some(w) => {
                    return Err(err(
                        "query.soql.unexpected-token",
                        format!("Unexpected {w}"),
                    ))
                }
            };
            Ok((resolve(ds, name)?, desc))
        })
        .collect()
}

/// A value of a row as the comparisons see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Seq(u64),
    Time(i64),
    Num(f64),
    Text(String),
    Bool(bool),
}

fn field_val(ds: &Dataset, row: &Row, f: &Field) -> Option<Val> {
    match f {
        Field::Id => Some(Val::Seq(row.seq)),
        Field::CreatedAt => Some(Val::Time(row.created_at)),
        Field::UpdatedAt => Some(Val::Time(row.updated_at)),
        Field::Version => Some(Val::Text(row.version.clone())),
        Field::Column(i) => {
            let v = row.cells[*i].as_ref()?;
            Some(match (ds.columns[*i].kind, v) {
                (_, serde_json::Value::Bool(b)) => Val::Bool(*b),
                (ColumnType::Number, serde_json::Value::String(s)) => {
                    s.parse().map(Val::Num).unwrap_or(Val::Text(s.clone()))
                }
                (_, serde_json::Value::String(s)) => Val::Text(s.clone()),
                (_, other) => Val::Text(other.to_string()),
            })
        }
    }
}

/// Converts a literal to the type of the field it is compared with, as the server's typechecker does.
fn literal_for(field: &Field, ds: &Dataset, lit: &Operand) -> Result<Option<Val>, QueryError> {
    let mismatch = |what: &str| err("query.soql.type-mismatch", format!("Type mismatch: {what}"));
    Ok(match (field, lit) {
        (_, Operand::Null) => None,
        (Field::Id, Operand::Str(s)) => {
            Some(Val::Seq(super::ids::decode(s).ok_or_else(|| {
                mismatch(&format!("{s:?} is not a row id"))
            })?))
        }
        (Field::CreatedAt | Field::UpdatedAt, Operand::Str(s)) => {
            Some(Val::Time(super::time::portal_ms(s).ok_or_else(|| {
                mismatch(&format!("{s:?} is not a timestamp"))
            })?))
        }
        (Field::Column(i), Operand::Str(s)) if ds.columns[*i].kind == ColumnType::Number => {
            Some(Val::Num(
                s.parse()
                    .map_err(|_| mismatch(&format!("{s:?} is not a number")))?,
            ))
        }
        (_, Operand::Str(s)) => Some(Val::Text(s.clone())),
        (_, Operand::Num(n)) => Some(Val::Num(*n)),
        (_, Operand::Bool(b)) => Some(Val::Bool(*b)),
        (_, Operand::Field(_)) => unreachable!("handled by the caller"),
    })
}

fn cmp_vals(a: &Val, b: &Val) -> Option<Ordering> {
    match (a, b) {
        (Val::Seq(x), Val::Seq(y)) => Some(x.cmp(y)),
        (Val::Time(x), Val::Time(y)) => Some(x.cmp(y)),
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(y),
        (Val::Text(x), Val::Text(y)) => Some(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Evaluates with three-valued logic: `None` is unknown.
pub fn eval(ds: &Dataset, row: &Row, e: &Expr) -> Option<bool> {
    match e {
        Expr::IsNull(f, want_null) => Some(field_val(ds, row, f).is_none() == *want_null),
        Expr::Test(f, op, v) => {
            let a = field_val(ds, row, f)?;
            Some(op.holds(cmp_vals(&a, v.as_ref()?)?))
        }
        Expr::Fields(f, op, g) => {
            let (a, b) = (field_val(ds, row, f)?, field_val(ds, row, g)?);
            Some(op.holds(cmp_vals(&a, &b)?))
        }
        Expr::In(f, vals) => {
            let a = field_val(ds, row, f)?;
            let mut unknown = false;
            for v in vals {
                match v.as_ref().and_then(|v| cmp_vals(&a, v)) {
                    Some(Ordering::Equal) => return Some(true),
                    Some(_) => {}
                    None => unknown = true,
                }
            }
            (!unknown).then_some(false)
        }
        Expr::Unknown => None,
        Expr::And(a, b) => match (eval(ds, row, a), eval(ds, row, b)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Expr::Or(a, b) => match (eval(ds, row, a), eval(ds, row, b)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Expr::Not(a) => eval(ds, row, a).map(|v| !v),
    }
}

/// The lowest `:id` (sequence number) a row can have for `e` to hold, when `e` bounds it: every row before
/// it fails `e`, so a query may start there instead of at the first row (a keyset page `:id > 'row-...'`
/// would otherwise look at every row before its cursor: pages of a full load cost the square of the rows).
/// Only skips rows; every row from the bound on is still evaluated.
pub fn first_seq(e: &Expr) -> Option<u64> {
    match e {
        Expr::Test(Field::Id, op, Some(Val::Seq(x))) => match op {
            CmpOp::Gt => Some(x.saturating_add(1)),
            CmpOp::Ge | CmpOp::Eq => Some(*x),
            _ => None,
        },
        // Both must hold: either's bound does.
        Expr::And(a, b) => match (first_seq(a), first_seq(b)) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        },
        // One must hold: the lower bound of the two, if both have one.
        Expr::Or(a, b) => Some(first_seq(a)?.min(first_seq(b)?)),
        _ => None,
    }
}

/// Orders two rows by `order`; nulls sort last ascending (first descending).
pub fn cmp_rows(ds: &Dataset, a: &Row, b: &Row, order: &[(Field, bool)]) -> Ordering {
    for (f, desc) in order {
        let o = match (field_val(ds, a, f), field_val(ds, b, f)) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => cmp_vals(&x, &y).unwrap_or(Ordering::Equal),
        };
        let o = if *desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}
