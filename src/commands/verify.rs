//! `dobsob verify`: compare each dataset in the warehouse with the source, changing nothing, and print a
//! verdict per dataset. The comparison is the engine's (`dobsob_engine::verify`).

use std::time::Duration;

use dobsob_engine::verify::{Failure, Verifier};
use dobsob_engine::warehouse::postgres::ConnInfo;

use crate::cli::VerifyArgs;
use crate::error::{Error, ExitStatus};
use crate::printer::Printer;
use crate::settings::Settings;

pub async fn run(
    settings: &Settings,
    args: &VerifyArgs,
    printer: Printer,
) -> Result<ExitStatus, Error> {
    settings.require_data_dir()?;
    let datasets = settings.select(&args.selection)?;
    let timeout = Duration::from_secs(args.timeout);
    let verifier = match &args.warehouse {
        Some(url) => Verifier::open_postgres(
            &ConnInfo::from_env(url).map_err(Error::Config)?,
            &settings.portal,
            settings.token.clone(),
            timeout,
        )?,
        None => Verifier::open(
            &settings.warehouse_path(),
            &settings.portal,
            settings.token.clone(),
            timeout,
        )?,
    };
    let mut differ = 0;
    let mut rows = Vec::new();
    for ds in &datasets {
        let result = verifier.dataset(ds, args.deep, args.page_size).await;
        let (state, detail) = match result {
            Ok(v) => {
                let d = v.differences();
                if d.is_empty() {
                    let compared = if args.deep {
                        "row count, newest :updated_at, and every row's :id, :updated_at and :version match"
                    } else {
                        "row count and newest :updated_at match (--deep compares every row)"
                    };
                    (
                        "in step".to_string(),
                        format!("{} rows: {compared}", v.local_rows),
                    )
                } else {
                    differ += 1;
                    ("DIFFERS".to_string(), d.join("; "))
                }
            }
            // The other datasets would wait out the same retries to say the same thing.
            Err(Failure::Unreachable(e)) => {
                return Err(Error::Unreachable(format!(
                    "cannot reach the portal {}: {e}. Check the network, or point --portal (or \
                     DOBSOB_PORTAL) at the portal that filled the warehouse",
                    settings.portal
                )))
            }
            Err(Failure::Other(e)) => {
                differ += 1;
                ("error".to_string(), e)
            }
        };
        rows.push(vec![ds.key.to_string(), state, detail]);
    }
    printer.line(&crate::printer::table(
        &["DATASET", "VERIFY", "DETAIL"],
        &rows,
    ));
    Ok(if differ > 0 {
        ExitStatus::Failed
    } else {
        ExitStatus::Ok
    })
}
