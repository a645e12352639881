//! Exit codes, and [`Failure`]: a one-line message with the code to exit with.

use std::fmt;
use std::process::ExitStatus;

/// The exit codes of `verrou` other than a job's own status (see the README's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// `status`: the lock is free.
    Free = 1,
    /// The command line is wrong (EX_USAGE).
    Usage = 64,
    /// The store cannot be reached, or one of its operations failed (EX_UNAVAILABLE).
    Unavailable = 69,
    /// Something that should not happen (EX_SOFTWARE).
    Internal = 70,
    /// `run`: the lock was not free within `--wait`; the job did not run (EX_TEMPFAIL).
    Busy = 75,
    /// `run`: the lock was lost while the job ran.
    Lost = 76,
    /// The store's configuration is wrong: URL, configuration file, store name (EX_CONFIG).
    Config = 78,
    /// `run`: the job could not be executed, as shells report it.
    CannotExecute = 126,
    /// `run`: the job's program was not found, as shells report it.
    NotFound = 127,
}

impl Exit {
    /// The code as a process exit status.
    pub(crate) fn code(self) -> u8 {
        self as u8
    }
}

/// The exit status a shell gives for signal `signal`: 128 + its number.
pub(crate) fn signal_code(signal: i32) -> u8 {
    u8::try_from(signal)
        .ok()
        .and_then(|signal| signal.checked_add(128))
        .unwrap_or(Exit::Internal.code())
}

/// A child's status as a shell reports it: its exit code, or 128 + the signal that killed it.
pub(crate) fn status_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;

    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(Exit::Internal.code()),
        (None, Some(signal)) => signal_code(signal),
        (None, None) => Exit::Internal.code(),
    }
}

/// Why `verrou` stops without a job status of its own to report: one line for stderr and
/// the code to exit with.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// A failure that exits with `exit`.
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self::with_code(exit.code(), message)
    }

    /// A failure that exits with a code of its own (a signal's 128 + N).
    pub(crate) fn with_code(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The code to exit with.
    pub(crate) fn code(&self) -> u8 {
        self.code
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.message)
    }
}

impl From<verrou::Error> for Failure {
    /// Sorts a library error by whose fault it is: the command line's, the configuration's,
    /// or the store's. The message carries the error's causes, on one line.
    fn from(error: verrou::Error) -> Self {
        use verrou::Error;

        let exit = match &error {
            Error::Storage { .. } => Exit::Unavailable,
            Error::InvalidConfig(_)
            | Error::UnknownStore { .. }
            | Error::FeatureDisabled { .. } => Exit::Config,
            Error::InvalidKey { .. }
            | Error::InvalidDuration { .. }
            | Error::InvalidArgument(_) => Exit::Usage,
            Error::NotOwned { .. } | Error::LockLost { .. } => Exit::Lost,
            _ => Exit::Internal,
        };
        Self::new(exit, one_line(&error))
    }
}

/// `error` and its chain of causes, joined with `: ` on one line.
pub(crate) fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let text = next.to_string();
        // Some clients repeat their cause in their own message: say it once.
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = next.source();
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_by_whose_fault_they_are() {
        let cases = [
            (verrou::Error::storage("refused"), Exit::Unavailable),
            (verrou::Error::InvalidConfig("bad".into()), Exit::Config),
            (verrou::Error::invalid_key("", "empty"), Exit::Usage),
            (verrou::Error::NotOwned { key: "k".into() }, Exit::Lost),
        ];
        for (error, exit) in cases {
            assert_eq!(Failure::from(error).code(), exit.code());
        }
    }

    #[test]
    fn causes_are_shown_on_one_line() {
        let failure = Failure::from(verrou::Error::storage("connection\nrefused"));
        assert_eq!(
            failure.to_string(),
            "lock store operation failed: connection refused"
        );
    }

    #[test]
    fn signal_deaths_count_from_128() {
        assert_eq!(signal_code(15), 143);
        assert_eq!(signal_code(9), 137);
    }
}
