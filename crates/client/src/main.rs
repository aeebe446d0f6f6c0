//! `attend`: command line, stdin thread and exit code around [`attendance_client::run`]; or,
//! for `attend admin …`, around [`attendance_client::admin::run`].

use std::io::{self, BufRead, IsTerminal};

use attendance_client::cli::{Args, Command};
use attendance_client::{IdSource, Options, Output, Trust, exit};
use clap::Parser;
use tokio::sync::mpsc;

fn main() {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("attend: cannot start the async runtime: {e}");
            std::process::exit(exit::FAILURE);
        }
    };
    if let Some(Command::Admin(admin)) = &args.command {
        let mut out = String::new();
        let code = match runtime.block_on(attendance_client::admin::run(admin, &mut out)) {
            Ok(()) => exit::MARKED,
            Err(e) => {
                eprintln!("attend: {e}");
                e.exit_code()
            }
        };
        print!("{out}");
        std::process::exit(code);
    }
    let id = match args.id {
        Some(id) => IdSource::Given(id),
        None => IdSource::Ask {
            prompt: io::stdin().is_terminal(),
        },
    };
    let mut input = spawn_stdin_reader();
    let mut out = Output::stdout();
    let options = Options {
        tls: match args.ca {
            Some(file) => Some(Trust::CaFile(file)),
            None => args.tls.then_some(Trust::System),
        },
        reconnect_for: args.reconnect_for,
        ..Options::default()
    };
    let result = runtime.block_on(attendance_client::run(
        &args.server,
        id,
        &mut input,
        interrupted(),
        &mut out,
        &options,
    ));
    out.clear_progress();
    let code = match result {
        Ok(_) => exit::MARKED,
        Err(e) => {
            eprintln!("attend: {e}");
            e.exit_code()
        }
    };
    // Exit here, not by returning: the stdin thread may be blocked in read() waiting for Enter,
    // and nothing should wait for it (or for the runtime) once the session is over.
    std::process::exit(code);
}

/// Completes on Ctrl-C. If the handler cannot be installed, SIGINT keeps its default action.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Reads stdin line by line on a plain thread and forwards the lines. `tokio::io::stdin` would
/// park a blocking read in the runtime, which then cannot shut down until Enter is pressed.
fn spawn_stdin_reader() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match stdin.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']).to_owned();
                        if tx.blocking_send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        // Without the thread the session still works; only typed input is lost.
        eprintln!("attend: cannot read standard input: {e}");
    }
    rx
}
