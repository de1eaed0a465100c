//! `dobsob cron [--systemd]` (and `sync --generate-cron`, the original guide's spelling): print what makes
//! the nightly job run, with absolute paths, ready to install. Nothing is installed; the data directory's
//! `logs/` is created (private) if it does not exist yet, because the crontab lines append to
//! `logs/cron.log` and sh fails a redirection into a missing directory before dobsob even starts: a nightly
//! job that never runs and says nothing.

use std::path::{Path, PathBuf};

use crate::error::{Error, ExitStatus};
use crate::printer::Printer;
use crate::settings::Settings;

/// What the scheduled commands are built from.
pub struct CronSpec {
    pub exe: PathBuf,
    pub data_dir: PathBuf,
    pub catalog: Option<PathBuf>,
    pub portal: Option<String>,
    /// `HH:MM` of the nightly run.
    pub at: (u32, u32),
    /// The account the systemd services run as (the one printing them): the data directory is private to
    /// it.
    pub user: Option<String>,
    /// The warehouse is PostgreSQL (`--warehouse` or `DOBSOB_WAREHOUSE`): the job needs `DOBSOB_WAREHOUSE`
    /// in its environment (the URL is not written into the lines: it could hold the password).
    pub postgres: bool,
}

impl CronSpec {
    pub fn from_settings(
        settings: &Settings,
        catalog: Option<&Path>,
        portal: Option<&str>,
        at: &str,
    ) -> Result<CronSpec, Error> {
        let abs = |p: &Path| {
            std::path::absolute(p)
                .map_err(|e| Error::Config(format!("cannot make {} absolute: {e}", p.display())))
        };
        let exe = std::env::current_exe()
            .map_err(|e| Error::Io(format!("cannot find the dobsob binary's path: {e}")))?;
        Ok(CronSpec {
            exe,
            data_dir: abs(&settings.data_dir)?,
            catalog: catalog.map(abs).transpose()?,
            portal: portal.map(str::to_string),
            at: parse_at(at)?,
            user: std::env::var("USER").ok().filter(|u| !u.is_empty()),
            postgres: false,
        })
    }

    fn base(&self) -> String {
        let q = |p: &Path| shell_quote(&p.display().to_string());
        let mut s = format!("{} --data-dir {}", q(&self.exe), q(&self.data_dir));
        if let Some(c) = &self.catalog {
            s.push_str(&format!(" --catalog {}", q(c)));
        }
        if let Some(p) = &self.portal {
            s.push_str(&format!(" --portal {}", shell_quote(p)));
        }
        s
    }

    /// Crontab lines: the nightly `sync --schedule-check` and a weekly forced sync of the primary datasets.
    pub fn crontab(&self) -> String {
        let log = shell_quote(
            &self
                .data_dir
                .join("logs")
                .join("cron.log")
                .display()
                .to_string(),
        );
        let (h, m) = self.at;
        let base = self.base();
        format!(
            "# dobsob: nightly sync of the datasets that are due, weekly forced sync of the primary ones.\n\
             # Set SOCRATA_APP_TOKEN in the crontab's environment (a line SOCRATA_APP_TOKEN=... above these).\n\
             {pg}\
             # Exit 75 means the previous run is still going; 1 means some datasets failed (see the log).\n\
             {m} {h} * * * {base} sync --schedule-check -q >> {log} 2>&1\n\
             {m} {wh} * * 0 {base} sync --force --primary -q >> {log} 2>&1\n",
            wh = (h + 2) % 24,
            pg = if self.postgres {
                "# The warehouse is PostgreSQL: set DOBSOB_WAREHOUSE=postgres://... (its URL, the password in \
                 ~/.pgpass) above these too,\n# or the jobs would sync into a DuckDB file in the data directory.\n"
            } else {
                ""
            }
        )
    }

    /// systemd services and timers: the nightly run, and the weekly forced sync of the primary datasets.
    pub fn systemd(&self) -> String {
        let (h, m) = self.at;
        // The data directory is private to the account that made it: the services run as that account.
        let user = match &self.user {
            Some(u) => format!("User={u}\n"),
            None => String::new(),
        };
        let weekly = format!(
            "\n# /etc/systemd/system/dobsob-weekly.service\n\
             [Unit]\n\
             Description=dobsob: weekly forced sync of the primary datasets (ignores the change gate)\n\
             Wants=network-online.target\n\
             After=network-online.target\n\
             \n\
             [Service]\n\
             Type=oneshot\n\
             {user}\
             ExecStart={base} sync --force --primary -q\n\
             EnvironmentFile=-/etc/dobsob.env\n\
             SuccessExitStatus=75\n\
             \n\
             # /etc/systemd/system/dobsob-weekly.timer\n\
             [Unit]\n\
             Description=dobsob weekly forced sync\n\
             \n\
             [Timer]\n\
             OnCalendar=Sun *-*-* {wh:02}:{m:02}:00\n\
             Persistent=true\n\
             \n\
             [Install]\n\
             WantedBy=timers.target\n",
            base = self.base(),
            wh = (h + 2) % 24,
            user = user.clone()
        );
        let nightly = format!(
            "# /etc/systemd/system/dobsob-sync.service\n\
             [Unit]\n\
             Description=dobsob: sync the due Socrata datasets into the DuckDB warehouse\n\
             Wants=network-online.target\n\
             After=network-online.target\n\
             \n\
             [Service]\n\
             Type=oneshot\n\
             {user}\
             ExecStart={base} sync --schedule-check -q\n\
             # SOCRATA_APP_TOKEN=... in a file readable by the service's user only\n\
             EnvironmentFile=-/etc/dobsob.env\n\
             # 75: the previous run still holds the data directory; not a failure\n\
             SuccessExitStatus=75\n\
             \n\
             # /etc/systemd/system/dobsob-sync.timer\n\
             [Unit]\n\
             Description=dobsob nightly sync\n\
             \n\
             [Timer]\n\
             OnCalendar=*-*-* {h:02}:{m:02}:00\n\
             Persistent=true\n\
             RandomizedDelaySec=15min\n\
             \n\
             [Install]\n\
             WantedBy=timers.target\n",
            base = self.base(),
            user = user
        );
        format!(
            "{nightly}{weekly}\n# Install: copy the four files, then `systemctl daemon-reload && \
             systemctl enable --now dobsob-sync.timer dobsob-weekly.timer`\n"
        )
    }
}

fn parse_at(at: &str) -> Result<(u32, u32), Error> {
    let bad = || Error::Config(format!("--at {at:?}: expected HH:MM, e.g. 02:30"));
    let (h, m) = at.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok((h, m))
}

/// Quotes a word for sh when it needs it.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:=,+@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub fn run(spec: &CronSpec, systemd: bool, printer: Printer) -> Result<ExitStatus, Error> {
    if !systemd {
        let logs = spec.data_dir.join("logs");
        dobsob_engine::files::create_private_dir(&logs).map_err(|e| {
            Error::Config(format!(
                "cannot create {} for the cron log: {e}",
                logs.display()
            ))
        })?;
    }
    printer.data(&if systemd {
        spec.systemd()
    } else {
        spec.crontab()
    });
    Ok(ExitStatus::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CronSpec {
        CronSpec {
            exe: "/opt/dob sob/dobsob".into(),
            data_dir: "/srv/data".into(),
            catalog: None,
            portal: Some("http://127.0.0.1:8080".into()),
            at: (2, 30),
            user: Some("analyst".into()),
            postgres: false,
        }
    }

    /// With a PostgreSQL warehouse the lines say the job needs DOBSOB_WAREHOUSE, and never carry a URL.
    #[test]
    fn a_postgres_warehouse_is_named_in_the_crontab_without_its_url() {
        let plain = spec().crontab();
        assert!(!plain.contains("DOBSOB_WAREHOUSE"), "{plain}");
        let c = CronSpec {
            postgres: true,
            ..spec()
        }
        .crontab();
        assert!(c.contains("set DOBSOB_WAREHOUSE=postgres://..."), "{c}");
        assert_eq!(
            c.lines().filter(|l| !l.starts_with('#')).count(),
            2,
            "the two jobs: {c}"
        );
    }

    #[test]
    fn crontab_and_systemd_use_absolute_quoted_paths() {
        let c = spec().crontab();
        assert!(c.contains(
            "30 2 * * * '/opt/dob sob/dobsob' --data-dir /srv/data --portal http://127.0.0.1:8080 sync --schedule-check -q >> /srv/data/logs/cron.log 2>&1"
        ), "{c}");
        assert!(
            c.contains("30 4 * * 0 ") && c.contains("sync --force --primary"),
            "{c}"
        );
        let s = spec().systemd();
        assert!(
            s.contains("OnCalendar=*-*-* 02:30:00") && s.contains("Persistent=true"),
            "{s}"
        );
        assert!(s.contains("SuccessExitStatus=75"), "{s}");
        assert_eq!(s.matches("User=analyst\n").count(), 2, "{s}");
        assert!(
            s.contains("OnCalendar=Sun *-*-* 04:30:00") && s.contains("sync --force --primary -q"),
            "the weekly forced sync, as in the crontab: {s}"
        );
        assert_eq!(parse_at("23:59").unwrap(), (23, 59));
        for bad in ["24:00", "2", "ab:cd", "02:60"] {
            assert!(parse_at(bad).is_err(), "{bad}");
        }
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
