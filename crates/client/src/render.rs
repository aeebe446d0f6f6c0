//! Where the session's messages go: a live, redrawn progress line on a terminal, plain
//! periodic lines anywhere else.
//!
//! The session only calls [`Output`]; it never writes to stdout itself, so tests can capture
//! everything with an in-memory writer. No colours are used.

use std::io::{self, IsTerminal, Write};

use attendance_protocol::{BurstKind, Event, Hello};

use crate::countdown;

/// Erase the current terminal line: return to column 0, clear to the end of the line.
const CLEAR_LINE: &str = "\r\x1b[K";

/// How often, in seconds of countdown, plain output repeats the time left.
pub const PLAIN_EVERY_SECS: u64 = 60;

/// How output is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A terminal: the progress line is redrawn in place with `\r` once per second.
    Terminal,
    /// A pipe or a file: one line at the start of a countdown and one every
    /// [`PLAIN_EVERY_SECS`]; no control sequences.
    Plain,
}

/// The student-facing output of a session.
pub struct Output {
    writer: Box<dyn Write + Send>,
    mode: Mode,
    /// The progress line currently on screen (terminal mode), to redraw after a message.
    shown: Option<String>,
    /// The remaining seconds last written in plain mode, `None` at the start of a countdown.
    last_plain: Option<u64>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("mode", &self.mode)
            .field("shown", &self.shown)
            .finish_non_exhaustive()
    }
}

impl Output {
    /// Output to `writer`, drawn as `mode` says.
    pub fn new(writer: impl Write + Send + 'static, mode: Mode) -> Self {
        Self {
            writer: Box::new(writer),
            mode,
            shown: None,
            last_plain: None,
        }
    }

    /// Output to stdout: [`Mode::Terminal`] if stdout is a terminal, else [`Mode::Plain`].
    pub fn stdout() -> Self {
        let mode = if io::stdout().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Plain
        };
        Self::new(io::stdout(), mode)
    }

    /// How this output is drawn.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Writes `text` and flushes. A closed stdout is no reason to abandon a session: write
    /// errors are ignored.
    fn write(&mut self, text: &str) {
        let _ = self.writer.write_all(text.as_bytes());
        let _ = self.writer.flush();
    }

    /// Prints one message line, keeping the progress line (if any) below it.
    pub fn line(&mut self, text: &str) {
        match self.shown.take() {
            Some(progress) => {
                self.write(&format!("{CLEAR_LINE}{text}\n{progress}"));
                self.shown = Some(progress);
            }
            None => self.write(&format!("{text}\n")),
        }
    }

    /// Prints a prompt on its own line; the student answers on the next one.
    pub fn prompt(&mut self, text: &str) {
        self.clear_progress();
        self.write(&format!("{text}\n"));
    }

    /// Shows the time left: redrawn in place on a terminal, every [`PLAIN_EVERY_SECS`] otherwise.
    pub fn progress(&mut self, remaining: u64, total: u64) {
        match self.mode {
            Mode::Terminal => {
                let line = countdown::progress_line(remaining, total);
                if self.shown.as_deref() != Some(line.as_str()) {
                    self.write(&format!("{CLEAR_LINE}{line}"));
                    self.shown = Some(line);
                }
            }
            Mode::Plain => {
                let due = match self.last_plain {
                    None => true,
                    Some(last) => last.saturating_sub(remaining) >= PLAIN_EVERY_SECS,
                };
                if due && remaining > 0 {
                    self.write(&format!("{}\n", countdown::plain_line(remaining)));
                    self.last_plain = Some(remaining);
                }
            }
        }
    }

    /// Ends the current countdown display: the progress line is erased, and the next
    /// countdown starts its plain output afresh.
    pub fn clear_progress(&mut self) {
        if self.shown.take().is_some() {
            self.write(CLEAR_LINE);
        }
        self.last_plain = None;
    }

    /// The server's greeting.
    pub fn greeting(&mut self, hello: &Hello) {
        self.line(&format!(
            "Connected to {} {}: {}",
            hello.server, hello.version, hello.text
        ));
    }

    /// A pushed event, described for people. `EVENT SHUTDOWN` is the session's business, not
    /// printed here.
    pub fn event(&mut self, event: &Event) {
        if let Some(text) = describe_event(event) {
            self.line(&text);
        }
    }
}

/// How an event reads on screen; `None` for events that are not shown as a line.
pub fn describe_event(event: &Event) -> Option<String> {
    Some(match event {
        Event::Join { name, .. } => format!("* {name} joined the class"),
        Event::Present { name } => format!("* {name} was marked present"),
        Event::Say { name, text } => format!("<{name}> {text}"),
        Event::Leave { name } => format!("* {name} left the class"),
        Event::Burst { kind, count, .. } => match kind {
            BurstKind::Joins => format!("* {count} more students joined the class"),
            BurstKind::Presents => format!("* {count} more students were marked present"),
            BurstKind::Leaves => format!("* {count} more students left the class"),
        },
        Event::Heartbeat(at) => format!("* server time {at}"),
        Event::Lagged(n) => format!("* {n} announcement(s) were skipped: this client fell behind"),
        Event::Replaced => {
            "* this seat was taken over by another connection with its resume token".to_owned()
        }
        Event::Ended {
            status,
            minutes_attended,
        } => format!(
            "* the class ended: you are recorded {status} ({minutes_attended} min attended)"
        ),
        Event::Degraded { dependency, text } => format!("* {dependency} is down: {text}"),
        Event::Recovered { dependency, text } => format!("* {dependency} is back: {text}"),
        Event::Shutdown => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
        }
    }

    #[test]
    fn terminal_messages_clear_and_redraw_the_progress_line() {
        let cap = Captured::default();
        let mut out = Output::new(cap.clone(), Mode::Terminal);
        out.progress(59, 60);
        out.line("<Bob> hi");
        out.clear_progress();
        let p = countdown::progress_line(59, 60);
        assert_eq!(
            cap.text(),
            format!("{CLEAR_LINE}{p}{CLEAR_LINE}<Bob> hi\n{p}{CLEAR_LINE}")
        );
    }

    #[test]
    fn terminal_progress_is_not_rewritten_when_unchanged() {
        let cap = Captured::default();
        let mut out = Output::new(cap.clone(), Mode::Terminal);
        out.progress(5, 10);
        out.progress(5, 10);
        assert_eq!(cap.text().matches("Class in progress").count(), 1);
    }

    #[test]
    fn plain_progress_prints_at_start_and_every_minute_without_control_codes() {
        let cap = Captured::default();
        let mut out = Output::new(cap.clone(), Mode::Plain);
        for remaining in (0..=150).rev() {
            out.progress(remaining, 150);
        }
        out.line("done");
        assert_eq!(
            cap.text(),
            "Class in progress: 00:02:30 left\n\
             Class in progress: 00:01:30 left\n\
             Class in progress: 00:00:30 left\n\
             done\n"
        );
        assert!(!cap.text().contains('\r'));
    }

    #[test]
    fn events_read_as_sentences() {
        let say: Event = match "EVENT SAY Bob hello there".parse() {
            Ok(attendance_protocol::ServerLine::Event(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(describe_event(&say).as_deref(), Some("<Bob> hello there"));
        assert_eq!(describe_event(&Event::Shutdown), None);
        assert!(
            describe_event(&Event::Lagged(3))
                .expect("shown")
                .contains('3')
        );
    }
}
