//! The command line of `attend`, in the library so that `xtask` can render its man page and
//! shell completions from the same definition the binary parses.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
///
/// `attend admin …` administers a daemon on this machine instead; see `attend admin --help`.
#[derive(Debug, Parser)]
#[command(name = "attend", version = VERSION, args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Instead of checking in: administer the daemon.
    #[command(subcommand)]
    pub command: Option<Command>,

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

    /// After a dropped connection, keep reconnecting (with backoff) for this long to get the
    /// seat back with the time already served, e.g. 5m; 0s gives up at once.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub reconnect_for: std::time::Duration,

    /// Your ID, COURSE_DIV_NAME_ROLL (e.g. ComputerNetworks_Div1_JayPatel_18BCP043). Without it,
    /// the first line of standard input is read.
    #[arg(value_name = "COURSE_DIV_NAME_ROLL")]
    pub id: Option<String>,
}

/// What `attend` can do besides checking in.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Administer the attendanced running on this machine, over its admin socket.
    ///
    /// The socket is private to the daemon's user (mode 0600): run as root (sudo) or as that
    /// user. Output is a table, or JSON with --json. Exit codes: 0 done; 1 the daemon refused
    /// or answered wrongly; 2 wrong usage; 3 cannot connect to the socket.
    Admin(AdminArgs),
}

/// `attend admin [--socket PATH] [--json] <command>`.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The daemon's admin socket [default: $STATE_DIRECTORY/attendanced.sock if
    /// $STATE_DIRECTORY is set, else /var/lib/attendanced/attendanced.sock if
    /// /var/lib/attendanced exists, else ./attendanced.sock].
    #[arg(long, env = "ATTEND_ADMIN_SOCKET", global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Print JSON (one object) instead of a table, for scripts.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to ask.
    #[command(subcommand)]
    pub action: AdminCommand,
}

/// The admin commands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum AdminCommand {
    /// Live numbers: connections, students checked in, classes, marks today, writer queue
    /// depth, last fsync latency, uptime and version.
    Status,
    /// Every student checked in, in every class, with the time each has left.
    Clients,
    /// Every class with students checked in, and how many.
    Classes,
    /// The students checked in to one class (or, without a class, to every class), with the
    /// time each has left.
    Who {
        /// The course, e.g. ComputerNetworks.
        #[arg(requires = "division")]
        course: Option<String>,
        /// The division, e.g. Div1.
        division: Option<String>,
    },
    /// Check-ins flagged today for the teacher (several rolls from one address within minutes,
    /// one roll from two addresses), in every class or in one. Flags, not blocks: a class
    /// behind one NAT address is normal.
    Flags {
        /// The course, e.g. ComputerNetworks.
        #[arg(requires = "division")]
        course: Option<String>,
        /// The division, e.g. Div1.
        division: Option<String>,
    },
    /// Stop the daemon gracefully, as SIGTERM does: every client is told, the CSV is synced.
    Shutdown,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn admin_is_a_subcommand_and_a_student_id_is_not() {
        let args =
            Args::try_parse_from(["attend", "admin", "who", "CN", "D1", "--json"]).expect("parses");
        let Some(Command::Admin(admin)) = args.command else {
            panic!("not admin: {args:?}");
        };
        assert!(admin.json);
        assert_eq!(
            admin.action,
            AdminCommand::Who {
                course: Some("CN".into()),
                division: Some("D1".into())
            }
        );
        let args = Args::try_parse_from(["attend", "CN_D1_Ann_1"]).expect("parses");
        assert!(args.command.is_none());
        assert_eq!(args.id.as_deref(), Some("CN_D1_Ann_1"));
        assert!(Args::try_parse_from(["attend", "admin", "who", "CN"]).is_err());
        assert!(Args::try_parse_from(["attend", "admin", "--socket", "s", "status"]).is_ok());
    }
}
