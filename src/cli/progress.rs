//! Progress for people: an indicatif bar on a terminal, and plain lines off a terminal (a log,
//! journald, a pipe), so a long command is never silent for minutes. Fed by the library's
//! progress events; `--json` and `-q` keep stdout clean (everything goes to stderr).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use crate::progress::Event;

/// Where progress goes.
pub struct Bar {
    mode: Mode,
}

enum Mode {
    Silent,
    Terminal(indicatif::ProgressBar),
    /// Off a terminal: one line when a phase starts, then at most one every `every` seconds,
    /// and one when it ends.
    Lines(Mutex<Lines>),
}

struct Lines {
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
    prefix: String,
}

impl Bar {
    /// A bar (`show`: not `-q`, not `--json`); plain lines when stderr is not a terminal.
    pub fn new(show: bool) -> Bar {
        Bar::with_prefix(show, "")
    }

    /// The same, with a prefix on every plain line (e.g. the model being trained).
    pub fn with_prefix(show: bool, prefix: &str) -> Bar {
        let mode = if !show {
            Mode::Silent
        } else if std::io::stderr().is_terminal() {
            let b = indicatif::ProgressBar::new(0);
            b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            Mode::Terminal(b)
        } else {
            Mode::Lines(Mutex::new(Lines {
                label: String::new(),
                total: 0,
                done: 0,
                started: Instant::now(),
                last: Instant::now(),
                prefix: prefix.into(),
            }))
        };
        Bar { mode }
    }

    /// Set the prefix of plain lines (terminal bars show it in their message).
    pub fn set_prefix(&self, prefix: &str) {
        if let Mode::Lines(l) = &self.mode {
            if let Ok(mut l) = l.lock() {
                l.prefix = prefix.into();
            }
        }
    }

    /// Feed one library event.
    pub fn event(&self, e: Event<'_>) {
        match &self.mode {
            Mode::Silent => {}
            Mode::Terminal(b) => match e {
                Event::Start { label, total } => {
                    b.reset();
                    b.set_length(total);
                    b.set_position(0);
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{msg:32} [{bar:30}] {pos}/{len} ({elapsed} elapsed, ETA {eta})",
                        )
                        .expect("invariant: template is valid")
                        .progress_chars("=> "),
                    );
                    b.set_message(label.to_string());
                }
                Event::Advance(n) => b.inc(n),
                Event::Message(m) => b.println(m),
                Event::Finish => b.finish_and_clear(),
            },
            Mode::Lines(l) => {
                let Ok(mut l) = l.lock() else { return };
                match e {
                    Event::Start { label, total } => {
                        l.label = label.to_string();
                        l.total = total;
                        l.done = 0;
                        l.started = Instant::now();
                        l.last = Instant::now();
                        eprintln!("{}{label}: started ({total} steps)", l.prefix);
                    }
                    Event::Advance(n) => {
                        l.done += n;
                        if l.last.elapsed().as_secs() >= 30 {
                            l.last = Instant::now();
                            eprintln!(
                                "{}{}: {}/{} ({:.0} s)",
                                l.prefix,
                                l.label,
                                l.done,
                                l.total,
                                l.started.elapsed().as_secs_f64()
                            );
                        }
                    }
                    Event::Message(m) => eprintln!("{}{m}", l.prefix),
                    Event::Finish => eprintln!(
                        "{}{}: done ({:.0} s)",
                        l.prefix,
                        l.label,
                        l.started.elapsed().as_secs_f64()
                    ),
                }
            }
        }
    }
}
