//! The command line of `attend`, in the library so that `xtask` can render its man page and
//! shell completions from the same definition the binary parses.

use std::path::PathBuf;

use clap::Parser;

/// Version shown by `--version`: the crate version and the git commit it was built from
/// (`unknown` when built outside a git checkout, e.g. from a crate tarball).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("ATTENDANCED_GIT_COMMIT"),
    ")"
);

/// Check into a class on an attendanced server, stay for its length, and get marked present.
///
/// Lines you type while waiting are sent to the class as chat.
///
/// Exit codes: 0 marked present; 1 the server could not store the mark, or another protocol
/// failure; 2 wrong usage or unusable TLS settings; 3 server unreachable; 4 identifier refused;
/// 5 disconnected before being marked; 6 server certificate not trusted; 130 interrupted.
#[derive(Debug, Parser)]
#[command(name = "attend", version = VERSION)]
pub struct Args {
    /// The server to connect to.
    #[arg(
        long,
        env = "ATTEND_SERVER",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:65001"
    )]
    pub server: String,

    /// Connect with TLS; the server's certificate must be valid for the host part of --server.
    /// Without --ca, the system's trusted root certificates are used.
    #[arg(long, env = "ATTEND_TLS", value_parser = clap::builder::BoolishValueParser::new())]
    pub tls: bool,

    /// Trust exactly the PEM certificates in FILE (e.g. your school's CA) instead of the
    /// system's roots. Implies --tls.
    #[arg(long, env = "ATTEND_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Your ID, COURSE_DIV_NAME_ROLL (e.g. ComputerNetworks_Div1_JayPatel_18BCP043). Without it,
    /// the first line of standard input is read.
    #[arg(value_name = "COURSE_DIV_NAME_ROLL")]
    pub id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Args::command().debug_assert();
    }
}
