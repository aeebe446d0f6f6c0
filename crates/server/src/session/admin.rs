//! The administrator's commands: `SHUTDOWN` (over the network with the admin token, or on the
//! admin socket without one) and the admin socket's reports.

use attendance_protocol::{Command, ErrorCode, Reply, Token};
use tracing::warn;

use super::{Flow, Outbox, Peer, Session};

impl Session {
    /// `SHUTDOWN [token]`.
    pub(super) fn shutdown(&mut self, token: Option<Token>, out: &mut Outbox) -> Flow {
        let peer = self.peer;
        let trusted = peer == Peer::Admin;
        match token {
            _ if trusted => {
                warn!(%peer, "shutdown requested over the admin socket");
                self.reply(out, Reply::Shutdown);
                self.engine.shutdown.cancel();
                Flow::Continue
            }
            Some(t) if self.engine.admin.verify(t.as_str()) => {
                warn!(%peer, "shutdown requested by an administrator");
                self.reply(out, Reply::Shutdown);
                self.engine.shutdown.cancel();
                Flow::Continue
            }
            Some(_) => {
                warn!(%peer, "shutdown refused: wrong admin token");
                self.refuse(out, ErrorCode::Denied, "wrong admin token")
            }
            None => {
                warn!(%peer, "shutdown refused: no admin token");
                self.refuse(
                    out,
                    ErrorCode::Denied,
                    "SHUTDOWN needs the admin token: SHUTDOWN <token>",
                )
            }
        }
    }

    /// `STATUS`, `CLASSES`, `WHO` on the admin socket (the dispatch refused them elsewhere).
    pub(super) fn admin_report(&mut self, command: Command, out: &mut Outbox) -> Flow {
        let reply = match command {
            Command::Status => Reply::Status(crate::admin::report::status(&self.engine)),
            Command::Classes { offset } => {
                Reply::Classes(crate::admin::report::classes(&self.engine, offset))
            }
            Command::Who { class, offset } => Reply::Who(crate::admin::report::who(
                &self.engine,
                class.as_ref(),
                offset,
            )),
            Command::Flags { class, offset } => Reply::Flags(crate::admin::report::flags(
                &self.engine,
                class.as_ref(),
                offset,
            )),
            other => {
                let word = other.word();
                return self.refuse(
                    out,
                    ErrorCode::Unknown,
                    format!("{word} is not answered here"),
                );
            }
        };
        self.reply(out, reply)
    }
}
