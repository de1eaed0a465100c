//! `dobsob postgres grant-read ROLE`: read access to a PostgreSQL warehouse for analysts.

use dobsob_engine::warehouse::postgres::{grant_read_sql, off_runtime, ConnInfo, PgWarehouse};

use crate::cli::GrantReadArgs;
use crate::error::{Error, ExitStatus};
use crate::printer::Printer;

pub fn grant_read(a: &GrantReadArgs, printer: Printer) -> Result<ExitStatus, Error> {
    let info = ConnInfo::from_env(&a.warehouse).map_err(Error::Config)?;
    if a.print {
        printer.data(&grant_read_sql(&info.schema, &a.role, &info.user));
        return Ok(ExitStatus::Ok);
    }
    // Opening creates dobsob's schemas if they are not there yet, so the grants cover them.
    off_runtime(|| PgWarehouse::open(&info)?.grant_read(&a.role))?;
    printer.line(&format!(
        "{} may now read schema {} (the datasets and dobsob_datasets) and schema dobsob, now and for \
         the tables dobsob creates later",
        a.role, info.schema
    ));
    Ok(ExitStatus::Ok)
}
