//! The scan gate, the pure part. A workload annotated `berth.dev/max-severity: High` is pinned
//! to a new digest only once the digest's ImageScan is Complete with no finding above High:
//! until then the pin is held, and a scan that failed or found more is refused. What holds is
//! recorded on the workload (`berth.dev/rollout-held`) and told once per digest in an Event.
//!
//! A refused digest is not marked bad and nothing older is chosen instead: the workload stays
//! where it is, and the same digest is decided again when its scan changes (a re-scan, newer
//! vulnerability data) or the threshold does. A newer digest is decided on its own scan.

use std::collections::BTreeMap;

use crate::{
    api::{ImageScan, ScanPhase},
    scanning::{
        Severity,
        plan::{above, parse_threshold, scan_name},
    },
};

/// `None`, `Undefined`, `Informational`, `Low`, `Medium`, `High` or `Critical`
/// (case-insensitive): the most severe finding a new digest may have to be pinned. `None` allows
/// no finding at all. Opts the workload in to the scan gate.
pub const MAX_SEVERITY_ANNOTATION: &str = "berth.dev/max-severity";
/// `container=digest: why; ...`: the pins the scan gate holds now, and why. Written by berth,
/// removed once nothing is held.
pub const HELD_ANNOTATION: &str = "berth.dev/rollout-held";

/// Event reasons.
pub const WAITING_FOR_SCAN: &str = "WaitingForScan";
pub const SCAN_FAILED: &str = "ScanFailed";
pub const VULNERABLE_IMAGE_REFUSED: &str = "VulnerableImageRefused";
pub const SCAN_GATE_UNAVAILABLE: &str = "ScanGateUnavailable";

/// The longest part of a scan's own message quoted in a hold (the annotation and the Event).
const MAX_QUOTED: usize = 200;

/// The most severe finding a workload accepts in a new digest; `MaxSeverity(None)` accepts none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxSeverity(pub Option<Severity>);

impl MaxSeverity {
    pub fn parse(text: &str) -> Result<MaxSeverity, String> {
        parse_threshold(text).map(MaxSeverity)
    }

    /// As the annotation spells it.
    pub fn name(self) -> &'static str {
        match self.0 {
            None => "None",
            Some(Severity::Critical) => "Critical",
            Some(Severity::High) => "High",
            Some(Severity::Medium) => "Medium",
            Some(Severity::Low) => "Low",
            Some(Severity::Informational) => "Informational",
            Some(Severity::Undefined) => "Undefined",
        }
    }
}

/// What the gate reads of an ImageScan: whose image it is, and its outcome. Kept for every
/// ImageScan berth watches, so small: no findings list, a failure's message cut short.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub repository: String,
    pub digest: String,
    pub phase: ScanPhase,
    /// `findingSeverityCounts`, positive counts only.
    pub counts: BTreeMap<String, i64>,
    /// Why a scan failed or is unsupported.
    pub reason: Option<String>,
    pub message: Option<String>,
    /// Ecosystems of the image's packages the vulnerability data had no records for.
    pub not_checked: Vec<String>,
}

impl Scan {
    pub fn of(scan: &ImageScan) -> Scan {
        let status = scan.status.as_ref();
        let phase = status.map(|s| s.phase).unwrap_or_default();
        let failed = matches!(phase, ScanPhase::Failed | ScanPhase::UnsupportedImage);
        Scan {
            repository: scan.spec.repository_ref.name.clone(),
            digest: scan.spec.digest.clone(),
            phase,
            counts: status
                .map(|s| s.finding_severity_counts.iter().filter(|(_, n)| **n > 0).map(|(k, n)| (k.clone(), *n)))
                .into_iter()
                .flatten()
                .collect(),
            reason: status.and_then(|s| s.reason.clone()).filter(|_| failed),
            message: status.and_then(|s| s.message.as_deref()).filter(|_| failed).map(|m| cut(m, MAX_QUOTED)),
            not_checked: status.map(|s| s.ecosystems_without_data.clone()).unwrap_or_default(),
        }
    }
}

/// The ImageScan a pin waits on: the scan of `digest` in Repository `repository`.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub namespace: &'a str,
    pub repository: &'a str,
    pub digest: &'a str,
}

impl Target<'_> {
    pub fn scan_name(&self) -> String {
        scan_name(self.repository, self.digest)
    }

    fn describe(&self) -> String {
        format!("ImageScan {}/{}", self.namespace, self.scan_name())
    }
}

/// Whether a pin goes through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Not decided yet: held, and decided again when the scan changes.
    Wait {
        reason: &'static str,
        message: String,
    },
    /// Decided against: held until the scan (or the threshold) changes.
    Refuse {
        reason: &'static str,
        message: String,
    },
}

impl Verdict {
    /// The Event reason and message of a hold; `None` for `Allow`.
    pub fn hold(&self) -> Option<(&'static str, &str)> {
        match self {
            Verdict::Allow => None,
            Verdict::Wait { reason, message } | Verdict::Refuse { reason, message } => Some((reason, message)),
        }
    }

    /// Only a pin waiting for its scan is normal; everything else needs someone to act.
    pub fn is_warning(&self) -> bool {
        self.hold().is_some_and(|(reason, _)| reason != WAITING_FOR_SCAN)
    }

    /// The `result` label of the rollouts counter.
    pub fn result(&self) -> Option<&'static str> {
        match self {
            Verdict::Allow => None,
            Verdict::Wait { .. } => Some("held"),
            Verdict::Refuse { .. } => Some("refused"),
        }
    }
}

/// Decides a pin to `target.digest` of a workload that accepts at most `max`, from the target's
/// ImageScan (`None`: there is none yet, or it is not known yet).
///
/// - none yet, `Pending`, `InProgress`: wait (the same message, so a scan that starts does not
///   rewrite the hold);
/// - `Failed`, `UnsupportedImage`: refused with the scan's reason (a failed scan is tried again
///   by the scan controller: then decided again);
/// - `Complete` with a positive count of a severity above `max`, or of a severity berth does not
///   rank (it cannot show that one is not above): refused, naming those counts and `max`;
/// - `Complete` with packages of an ecosystem the data has no records for (not checked): wait
///   until data that covers them arrives;
/// - `Complete` otherwise: allowed;
/// - a scan of that name that is of another image (the name keeps 16 hex digits of the digest):
///   refused, never taken for this image's.
pub fn verdict(max: MaxSeverity, target: Target<'_>, scan: Option<&Scan>) -> Verdict {
    let scan_ref = target.describe();
    let Some(scan) = scan else {
        return Verdict::Wait { reason: WAITING_FOR_SCAN, message: format!("waiting for {scan_ref}") };
    };
    if scan.digest != target.digest || scan.repository != target.repository {
        return Verdict::Refuse {
            reason: SCAN_GATE_UNAVAILABLE,
            message: format!("{scan_ref} is the scan of {}@{}, not of this image", scan.repository, scan.digest),
        };
    }
    let why = |what: &str| {
        let reason = scan.reason.as_deref().unwrap_or("no reason given");
        match &scan.message {
            Some(m) => format!("{scan_ref} {what} ({reason}): {m}"),
            None => format!("{scan_ref} {what} ({reason})"),
        }
    };
    match scan.phase {
        ScanPhase::Pending | ScanPhase::InProgress => {
            Verdict::Wait { reason: WAITING_FOR_SCAN, message: format!("waiting for {scan_ref}") }
        }
        ScanPhase::Failed => Verdict::Refuse { reason: SCAN_FAILED, message: why("failed") },
        ScanPhase::UnsupportedImage => Verdict::Refuse { reason: SCAN_FAILED, message: why("cannot scan this image") },
        ScanPhase::Complete => {
            let over = over(max, &scan.counts);
            if over.is_empty() && !scan.not_checked.is_empty() {
                // Packages nobody checked are no proof of anything: wait until data that covers
                // them is loaded (the scan is then matched again).
                return Verdict::Wait {
                    reason: WAITING_FOR_SCAN,
                    message: format!(
                        "{scan_ref} could not check the image's {} packages: the vulnerability data has no records for them",
                        scan.not_checked.join(", ")
                    ),
                };
            }
            if over.is_empty() {
                return Verdict::Allow;
            }
            let counts: Vec<String> = over.iter().map(|(k, n)| format!("{n} {k}")).collect();
            let allowed = match max.0 {
                None => " (no finding allowed)",
                Some(_) => "",
            };
            Verdict::Refuse {
                reason: VULNERABLE_IMAGE_REFUSED,
                message: format!(
                    "{scan_ref} found {}, above {MAX_SEVERITY_ANNOTATION} {}{allowed}",
                    counts.join(", "),
                    max.name()
                ),
            }
        }
    }
}

/// The verdict to hold a pin with, knowing the last one for the same digest: a refusal stands
/// while the digest is scanned again (a failed scan tried again, a re-scan asked for, newer
/// data matched), so a hold does not flap between refused and waiting, nor is told again,
/// each time its scan runs. The next result decides.
pub fn settle(previous: Option<&Verdict>, next: Verdict) -> Verdict {
    match (previous, &next) {
        (Some(refused @ Verdict::Refuse { .. }), Verdict::Wait { reason: WAITING_FOR_SCAN, .. }) => refused.clone(),
        _ => next,
    }
}

/// The counts of severities above `max`, most severe first; a key that is not a severity
/// counts as above (last).
fn over(max: MaxSeverity, counts: &BTreeMap<String, i64>) -> Vec<(&str, i64)> {
    const RANKED: [Severity; 6] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Informational,
        Severity::Undefined,
    ];
    let rank = |key: &str| RANKED.into_iter().find(|s| s.as_str() == key);
    let mut out: Vec<(Option<Severity>, &str, i64)> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (rank(k), k.as_str(), *n))
        .filter(|(s, _, _)| s.is_none_or(|s| above(s, max.0)))
        .collect();
    // Ranked first (most severe first), then what berth cannot rank.
    out.sort_by_key(|(s, k, _)| (s.is_none(), *s, *k));
    out.into_iter().map(|(_, k, n)| (k, n)).collect()
}

/// A pin whose image path no Repository declares: there is nothing to scan it as, so it waits
/// (a warning) until one does.
pub fn undeclared(registry: &str, path: &str) -> Verdict {
    Verdict::Wait {
        reason: SCAN_GATE_UNAVAILABLE,
        message: format!(
            "no Repository declares {path} in Registry {registry}: declare a Repository for {path} so its images \
             can be scanned"
        ),
    }
}

/// The Event note of a held pin.
pub fn note(container: &str, image: &str, verdict: &Verdict) -> Option<String> {
    let (_, message) = verdict.hold()?;
    Some(format!("not pinning {container} to {image}: {message}"))
}

/// One held pin as the annotation records it: `container=digest: why`, on one line and without
/// the `; ` that separates entries.
pub fn held_entry(container: &str, digest: &str, verdict: &Verdict) -> Option<String> {
    let (_, message) = verdict.hold()?;
    let message: String = message.chars().map(|c| if c == ';' || c.is_control() { ' ' } else { c }).collect();
    Some(format!("{container}={digest}: {message}"))
}

/// The `berth.dev/rollout-held` value for these entries; `None` (the annotation goes) when
/// nothing is held. Sorted, so the same holds always read the same and are not written again.
pub fn held_annotation(mut entries: Vec<String>) -> Option<String> {
    entries.sort();
    entries.dedup();
    (!entries.is_empty()).then(|| entries.join("; "))
}

/// The entries of the annotation for these containers: holds of containers the plan could not
/// decide for now, which stand until it can.
pub fn kept(annotation: Option<&str>, containers: &[String]) -> Vec<String> {
    annotation
        .into_iter()
        .flat_map(|a| a.split("; "))
        .filter(|e| e.split_once('=').is_some_and(|(c, _)| containers.iter().any(|k| k == c)))
        .map(String::from)
        .collect()
}

/// Whether the annotation already records this entry: it was said before (by this replica or
/// one before it), so its Event is not published again.
pub fn was_held(annotation: Option<&str>, entry: &str) -> bool {
    annotation.is_some_and(|a| a.split("; ").any(|e| e == entry))
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use proptest::prelude::*;

    use super::*;
    use crate::api::{ImageScanSpec, ImageScanStatus, LocalObjectReference, ScanFinding};

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn max(text: &str) -> MaxSeverity {
        MaxSeverity::parse(text).unwrap()
    }

    fn complete(counts: &[(&str, i64)]) -> Scan {
        Scan {
            repository: "app".into(),
            digest: d('b'),
            phase: ScanPhase::Complete,
            counts: counts.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            ..Scan::default()
        }
    }

    fn phase(phase: ScanPhase) -> Scan {
        Scan { phase, ..complete(&[]) }
    }

    fn target(digest: &str) -> Target<'_> {
        Target { namespace: "team-a", repository: "app", digest }
    }

    fn refused(v: &Verdict) -> (&'static str, &str) {
        match v {
            Verdict::Refuse { reason, message } => (reason, message),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn packages_nobody_checked_hold_the_pin_until_the_data_covers_them() {
        let digest = d('b');
        let unchecked = Scan { not_checked: vec!["Go".into()], ..complete(&[("UNDEFINED", 3)]) };
        match verdict(max("High"), target(&digest), Some(&unchecked)) {
            Verdict::Wait { reason, message } => {
                assert_eq!(reason, WAITING_FOR_SCAN);
                assert!(message.contains("Go packages"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let worse = Scan { not_checked: vec!["Go".into()], ..complete(&[("CRITICAL", 1)]) };
        assert_eq!(refused(&verdict(max("High"), target(&digest), Some(&worse))).0, VULNERABLE_IMAGE_REFUSED);
        let covered = Scan { not_checked: vec![], ..unchecked };
        assert_eq!(verdict(max("High"), target(&digest), Some(&covered)), Verdict::Allow);
    }

    #[test]
    fn thresholds_parse_as_the_scanning_module_says_and_print_as_written() {
        assert_eq!(max("high"), MaxSeverity(Some(Severity::High)));
        assert_eq!(max(" NONE "), MaxSeverity(None));
        assert_eq!(max("Critical").name(), "Critical");
        assert_eq!(max("none").name(), "None");
        assert_eq!(max("undefined").name(), "Undefined");
        assert!(MaxSeverity::parse("severe").is_err());
        assert!(MaxSeverity::parse("").is_err());
    }

    #[test]
    fn no_scan_or_an_unfinished_one_waits_with_one_stable_message() {
        let digest = d('b');
        let none = verdict(max("High"), target(&digest), None);
        let pending = verdict(max("High"), target(&digest), Some(&phase(ScanPhase::Pending)));
        let running = verdict(max("High"), target(&digest), Some(&phase(ScanPhase::InProgress)));
        let name = scan_name("app", &digest);
        assert_eq!(
            none,
            Verdict::Wait { reason: WAITING_FOR_SCAN, message: format!("waiting for ImageScan team-a/{name}") }
        );
        assert_eq!(pending, none, "a scan that appears does not rewrite the hold");
        assert_eq!(running, none, "nor one that starts");
        assert!(!none.is_warning());
        assert_eq!(none.result(), Some("held"));
    }

    #[test]
    fn a_clean_scan_or_findings_at_or_below_the_threshold_are_allowed() {
        let digest = d('b');
        assert_eq!(verdict(max("None"), target(&digest), Some(&complete(&[]))), Verdict::Allow);
        let at = complete(&[("HIGH", 3), ("MEDIUM", 9), ("LOW", 1), ("UNDEFINED", 4)]);
        assert_eq!(verdict(max("High"), target(&digest), Some(&at)), Verdict::Allow);
        assert_eq!(verdict(max("Critical"), target(&digest), Some(&complete(&[("CRITICAL", 1)]))), Verdict::Allow);
        // UNDEFINED ranks below every severity (as ECR ranks it): only None refuses it.
        assert_eq!(verdict(max("Low"), target(&digest), Some(&complete(&[("UNDEFINED", 2)]))), Verdict::Allow);
        // A zero (or a nonsense negative) count is no finding.
        let zero = complete(&[("CRITICAL", 0), ("HIGH", -1)]);
        assert_eq!(verdict(max("None"), target(&digest), Some(&zero)), Verdict::Allow);
        assert_eq!(Verdict::Allow.result(), None);
        assert_eq!(Verdict::Allow.hold(), None);
    }

    #[test]
    fn findings_above_the_threshold_are_refused_naming_counts_and_threshold() {
        let digest = d('b');
        let scan = complete(&[("MEDIUM", 5), ("CRITICAL", 2), ("HIGH", 1), ("LOW", 7)]);
        let v = verdict(max("Medium"), target(&digest), Some(&scan));
        let (reason, message) = refused(&v);
        assert_eq!(reason, VULNERABLE_IMAGE_REFUSED);
        assert_eq!(
            message,
            format!(
                "ImageScan team-a/{} found 2 CRITICAL, 1 HIGH, above berth.dev/max-severity Medium",
                scan_name("app", &digest)
            ),
            "most severe first, only what is above, and the threshold"
        );
        assert!(v.is_warning());
        assert_eq!(v.result(), Some("refused"));
        let v = verdict(max("None"), target(&digest), Some(&complete(&[("UNDEFINED", 1)])));
        assert!(refused(&v).1.ends_with("found 1 UNDEFINED, above berth.dev/max-severity None (no finding allowed)"));
    }

    #[test]
    fn a_severity_berth_cannot_rank_counts_against_any_threshold() {
        let digest = d('b');
        let scan = complete(&[("MODERATE", 1), ("HIGH", 1)]);
        let v = verdict(max("Critical"), target(&digest), Some(&scan));
        assert!(refused(&v).1.contains("found 1 MODERATE, above"), "{v:?}");
        let v = verdict(max("Low"), target(&digest), Some(&scan));
        assert!(refused(&v).1.contains("found 1 HIGH, 1 MODERATE, above"), "ranked first, unknown last: {v:?}");
    }

    #[test]
    fn a_failed_or_unsupported_scan_is_refused_with_its_reason() {
        let digest = d('b');
        let mut failed = phase(ScanPhase::Failed);
        failed.reason = Some("NoVulnerabilityData".into());
        failed.message = Some("no OSV data yet".into());
        let v = verdict(max("High"), target(&digest), Some(&failed));
        let (reason, message) = refused(&v);
        assert_eq!(reason, SCAN_FAILED);
        assert!(message.ends_with("failed (NoVulnerabilityData): no OSV data yet"), "{message}");
        let unsupported = Scan { phase: ScanPhase::UnsupportedImage, reason: None, message: None, ..failed };
        let v = verdict(max("High"), target(&digest), Some(&unsupported));
        assert!(refused(&v).1.ends_with("cannot scan this image (no reason given)"), "{v:?}");
        assert!(v.is_warning());
    }

    #[test]
    fn a_refusal_stands_while_the_digest_is_scanned_again_and_the_next_result_decides() {
        let digest = d('b');
        let refused = verdict(max("High"), target(&digest), Some(&complete(&[("CRITICAL", 1)])));
        let rescanning = verdict(max("High"), target(&digest), Some(&phase(ScanPhase::InProgress)));
        assert_eq!(settle(Some(&refused), rescanning.clone()), refused);
        assert_eq!(settle(Some(&refused), verdict(max("High"), target(&digest), None)), refused, "deleted, re-created");
        assert_eq!(settle(None, rescanning.clone()), rescanning, "nothing before: waiting");
        assert_eq!(settle(Some(&rescanning), rescanning.clone()), rescanning);
        let clean = verdict(max("High"), target(&digest), Some(&complete(&[("LOW", 4)])));
        assert_eq!(settle(Some(&refused), clean), Verdict::Allow, "the re-scan found nothing above");
        let failed = verdict(max("High"), target(&digest), Some(&phase(ScanPhase::Failed)));
        assert_eq!(settle(Some(&refused), failed.clone()), failed, "a new result replaces the old");
        assert_eq!(settle(Some(&failed), rescanning), failed, "a failed scan tried again is still refused");
        // A warning wait (no Repository) is not a scan running: it replaces a refusal.
        let undeclared = undeclared("main", "x");
        assert_eq!(settle(Some(&refused), undeclared.clone()), undeclared);
    }

    #[test]
    fn a_scan_of_another_image_under_the_same_name_is_never_taken_for_this_one() {
        // Two digests with the same first 16 hex digits share an ImageScan name.
        let wanted = format!("sha256:{}{}", "b".repeat(16), "0".repeat(48));
        let other = complete(&[]);
        assert_eq!(scan_name("app", &wanted), scan_name("app", &other.digest));
        let v = verdict(max("Critical"), target(&wanted), Some(&other));
        let (reason, message) = refused(&v);
        assert_eq!(reason, SCAN_GATE_UNAVAILABLE);
        assert!(message.contains(&format!("is the scan of app@{}", other.digest)), "{message}");
        let of_another_repository = Scan { repository: "other".into(), ..complete(&[]) };
        assert_ne!(verdict(max("Critical"), target(&d('b')), Some(&of_another_repository)), Verdict::Allow);
    }

    #[test]
    fn an_undeclared_repository_holds_with_a_warning_that_says_what_to_declare() {
        let v = undeclared("main", "team-a/app");
        let Verdict::Wait { reason, message } = &v else { panic!("held, not refused: {v:?}") };
        assert_eq!(*reason, SCAN_GATE_UNAVAILABLE);
        assert!(message.contains("declare a Repository for team-a/app"), "{message}");
        assert!(message.contains("Registry main"), "{message}");
        assert!(v.is_warning(), "someone must act");
        assert_eq!(v.result(), Some("held"));
    }

    #[test]
    fn the_scan_is_reduced_to_what_the_gate_reads() {
        let mut scan = ImageScan::new(
            "app-bbbb",
            ImageScanSpec { repository_ref: LocalObjectReference { name: "app".into() }, digest: d('b') },
        );
        assert_eq!(Scan::of(&scan), Scan { repository: "app".into(), digest: d('b'), ..Scan::default() });
        scan.status = Some(ImageScanStatus {
            phase: ScanPhase::Complete,
            finding_severity_counts: [("HIGH".to_string(), 2), ("LOW".to_string(), 0)].into(),
            findings: vec![ScanFinding { id: "GO-1".into(), ..Default::default() }],
            completed_at: Some(Time(Default::default())),
            reason: Some("Scanned".into()),
            message: Some("x".repeat(1000)),
            ..Default::default()
        });
        let reduced = Scan::of(&scan);
        assert_eq!(reduced.counts, BTreeMap::from([("HIGH".to_string(), 2)]));
        assert_eq!((reduced.reason, reduced.message), (None, None), "a complete scan's message is not kept");
        let status = scan.status.as_mut().unwrap();
        status.phase = ScanPhase::Failed;
        let reduced = Scan::of(&scan);
        assert_eq!(reduced.reason.as_deref(), Some("Scanned"));
        let message = reduced.message.unwrap();
        assert!(message.len() <= MAX_QUOTED + "…".len() && message.ends_with('…'), "{}", message.len());
    }

    #[test]
    fn held_pins_are_recorded_on_one_line_each_in_a_stable_order() {
        let wait = Verdict::Wait { reason: WAITING_FOR_SCAN, message: "waiting for ImageScan a/b".into() };
        let bad = Verdict::Refuse { reason: SCAN_FAILED, message: "failed (X): line one;\nline two".into() };
        let a = held_entry("web", &d('a'), &wait).unwrap();
        let b = held_entry("api", &d('b'), &bad).unwrap();
        assert_eq!(a, format!("web={}: waiting for ImageScan a/b", d('a')));
        assert_eq!(b, format!("api={}: failed (X): line one  line two", d('b')));
        assert_eq!(held_entry("web", &d('a'), &Verdict::Allow), None);
        let value = held_annotation(vec![a.clone(), b.clone(), a.clone()]).unwrap();
        assert_eq!(value, format!("{b}; {a}"), "sorted and once each");
        assert_eq!(held_annotation(vec![b.clone(), a.clone()]).as_deref(), Some(value.as_str()));
        assert_eq!(held_annotation(Vec::new()), None, "nothing held: the annotation goes");
        assert!(was_held(Some(&value), &a) && was_held(Some(&value), &b));
        assert!(!was_held(Some(&value), &format!("web={}: waiting for ImageScan a/c", d('a'))));
        assert!(!was_held(None, &a));
        assert_eq!(kept(Some(&value), &["web".to_string()]), vec![a.clone()]);
        assert_eq!(kept(Some(&value), &["api".to_string(), "web".to_string()]), vec![b.clone(), a.clone()]);
        assert!(kept(Some(&value), &["we".to_string()]).is_empty(), "by whole container name");
        assert!(kept(None, &["web".to_string()]).is_empty());
    }

    #[test]
    fn notes_name_the_container_and_image() {
        let v = undeclared("main", "x");
        let note = note("web", "r/x:v1@sha256:1", &v).unwrap();
        assert!(note.starts_with("not pinning web to r/x:v1@sha256:1: no Repository declares x"), "{note}");
        assert_eq!(super::note("web", "r/x", &Verdict::Allow), None);
    }

    const KEYS: [&str; 7] = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED", "SEVERE"];

    proptest! {
        /// Allowed exactly when the scan is complete and no positive count is of a severity
        /// above the threshold (or of one berth cannot rank).
        #[test]
        fn allowed_only_when_complete_and_nothing_is_above(
            counts in proptest::collection::btree_map(0usize..KEYS.len(), -1i64..3, 0..7),
            threshold in 0usize..7,
            phase_index in 0usize..5,
        ) {
            let names = ["None", "Undefined", "Informational", "Low", "Medium", "High", "Critical"];
            let max = max(names[threshold]);
            let phases = [
                ScanPhase::Pending, ScanPhase::InProgress, ScanPhase::Complete, ScanPhase::Failed,
                ScanPhase::UnsupportedImage,
            ];
            let scan = Scan {
                phase: phases[phase_index],
                counts: counts.iter().map(|(k, n)| (KEYS[*k].to_string(), *n)).collect(),
                ..complete(&[])
            };
            let digest = d('b');
            let v = verdict(max, target(&digest), Some(&scan));
            let bad = scan.counts.iter().any(|(k, n)| {
                *n > 0 && match k.as_str() {
                    "SEVERE" => true,
                    k => above(KEYS.iter().position(|x| *x == k).map(|i| [
                        Severity::Critical, Severity::High, Severity::Medium, Severity::Low,
                        Severity::Informational, Severity::Undefined,
                    ][i]).unwrap(), max.0),
                }
            });
            let allowed = scan.phase == ScanPhase::Complete && !bad;
            prop_assert_eq!(v == Verdict::Allow, allowed, "{:?}", v);
            if scan.phase == ScanPhase::Complete && bad {
                prop_assert_eq!(refused(&v).0, VULNERABLE_IMAGE_REFUSED);
            }
        }
    }
}
