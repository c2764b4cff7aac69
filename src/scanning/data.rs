//! The vulnerability data the operator scans with: one loaded [`Database`] at a time, replaced
//! whole when its source changes, and why there is none when there is none (a scan without data
//! must say so, never report "no findings").

use std::sync::Arc;

use tokio::sync::watch;

use super::osv::Database;

/// One load of the vulnerability data.
#[derive(Debug)]
pub struct Loaded {
    pub db: Database,
    /// Names this data: a digest over the archives' contents. Scans record it, and a
    /// `Continuous` scan is matched again when it changes.
    pub version: String,
    /// The newest `modified` of its records (RFC 3339): how current the data is.
    pub updated_at: Option<String>,
    /// Where it came from (a folder, a URL, an OCI reference), for status and logs.
    pub source: String,
}

impl Loaded {
    pub fn new(db: Database, version: String, source: String) -> Loaded {
        let updated_at = db.info().values().filter_map(|i| i.newest_modified.clone()).max();
        Loaded { db, version, updated_at, source }
    }
}

/// What the operator has to scan with now.
#[derive(Clone, Debug)]
pub enum State {
    /// No source was configured (`--vulnerability-data`).
    NotConfigured,
    /// The first load is under way.
    Loading,
    Ready(Arc<Loaded>),
    /// The last load failed. Scans use the data loaded before, if any.
    Failed {
        message: String,
        previous: Option<Arc<Loaded>>,
    },
}

/// The current data, shared by the loader (which sets it) and the scans (which read it).
pub struct VulnerabilityData {
    tx: watch::Sender<State>,
}

impl VulnerabilityData {
    pub fn new(configured: bool) -> VulnerabilityData {
        VulnerabilityData { tx: watch::channel(if configured { State::Loading } else { State::NotConfigured }).0 }
    }

    /// The data to scan with, or why there is none (a message for a scan's status).
    pub fn current(&self) -> Result<Arc<Loaded>, String> {
        match &*self.tx.borrow() {
            State::Ready(loaded) => Ok(loaded.clone()),
            State::Failed { previous: Some(loaded), .. } => Ok(loaded.clone()),
            State::Failed { message, previous: None } => Err(format!("the vulnerability data did not load: {message}")),
            State::Loading => Err("the vulnerability data is still loading".into()),
            State::NotConfigured => {
                Err("berth has no vulnerability data: run it with --vulnerability-data (a folder, a URL or an OCI artifact)".into())
            }
        }
    }

    pub fn state(&self) -> State {
        self.tx.borrow().clone()
    }

    /// New data: every scan that follows the data (`Continuous`) is matched again.
    pub fn set(&self, loaded: Loaded) {
        self.tx.send_replace(State::Ready(Arc::new(loaded)));
    }

    /// A load failed: the data loaded before (if any) stays in use, and the failure is kept.
    pub fn fail(&self, message: String) {
        self.tx.send_modify(|state| {
            let previous = match state {
                State::Ready(loaded) => Some(loaded.clone()),
                State::Failed { previous, .. } => previous.clone(),
                State::Loading | State::NotConfigured => None,
            };
            *state = State::Failed { message, previous };
        });
    }

    /// Changes of the data (a new version, a failure).
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_load_keeps_the_data_before_it_and_says_why_when_there_is_none() {
        let data = VulnerabilityData::new(true);
        assert!(data.current().unwrap_err().contains("still loading"));
        data.fail("unreachable".into());
        assert!(data.current().unwrap_err().contains("did not load: unreachable"));
        data.set(Loaded::new(Database::default(), "v1".into(), "/data".into()));
        assert_eq!(data.current().unwrap().version, "v1");
        data.fail("corrupt".into());
        assert_eq!(data.current().unwrap().version, "v1", "the earlier data stays in use");
        assert!(matches!(data.state(), State::Failed { message, .. } if message == "corrupt"));
        assert!(VulnerabilityData::new(false).current().unwrap_err().contains("--vulnerability-data"));
    }
}
