//! Operations: settings and their live reload, operating-system limits, metrics, systemd
//! notification and logging.

pub mod cli;
pub mod config;
pub mod health;
pub mod limits;
pub mod logging;
pub mod metrics;
pub(crate) mod notify;
pub mod private_file;
pub mod reload;
