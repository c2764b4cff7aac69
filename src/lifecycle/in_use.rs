//! Which images workloads use, and why: what they run (by digest, or through a tag that points
//! at the image now) and what their version policy (`berth.dev/rollout`) selects, since berth
//! may roll them out to that at any moment. Pure: the lifecycle controller (which keeps these
//! images, `protectInUse`) and `berth lifecycle preview --workloads` both decide with [`in_use`].

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
};

use crate::rollout::policy::{self, Candidate, Policy};

/// What one workload references in one repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reference<'a> {
    /// `Kind namespace/name`.
    pub workload: &'a str,
    /// The tag its image names: what it runs when the image names no digest (`latest` when it
    /// names neither, as image references read), and the tag its version policy never selects
    /// below (none: nothing to stay above, as for the rollout controller).
    pub tag: Option<&'a str>,
    /// The digest its image names: then that is what runs, wherever the tag points now.
    pub digest: Option<&'a str>,
    /// Its `berth.dev/rollout` annotation, as written.
    pub rollout: Option<&'a str>,
    /// Digests it was rolled back from (`berth.dev/bad-digests`): its policy chooses among the
    /// other tags, as the rollout controller does.
    pub bad: &'a [String],
}

/// One reason an image is in use.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Use {
    /// `Kind namespace/name`.
    pub workload: String,
    pub how: How,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum How {
    /// The workload runs the image by digest.
    Digest,
    /// The workload runs this tag, which points at the image now.
    Tag(String),
    /// The workload's version policy (as written) selects this tag, which points at the image now.
    Selected { policy: String, tag: String },
}

impl Use {
    /// Whether a version policy's choice, not what runs, makes the image in use.
    pub fn selected(&self) -> bool {
        matches!(self.how, How::Selected { .. })
    }
}

impl fmt::Display for Use {
    /// `Deployment prod/api runs it by digest`, `Deployment prod/api runs v1.4.2`,
    /// `Deployment prod/api: semver:~1.4 selects v1.4.3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.workload;
        match &self.how {
            How::Digest => write!(f, "{w} runs it by digest"),
            How::Tag(tag) => write!(f, "{w} runs {tag}"),
            How::Selected { policy, tag } => write!(f, "{w}: {policy} selects {tag}"),
        }
    }
}

/// Digest -> why it is in use (sorted, each reason once).
pub type InUse = BTreeMap<String, BTreeSet<Use>>;

/// The images of a repository that `references` use: the digest each runs (its own, or its
/// tag's in `tags`, tag -> digest), and the digest of the tag its version policy selects among
/// `tags` with [`policy::select`], as the rollout controller does (never below the tag its
/// image names, never a digest it was rolled back from; newest-pushed by `pushed_ms`, digest ->
/// unix ms, as the push-time ledger keeps them). A `digest` policy adds nothing (the workload
/// follows its own tag), and neither does one that does not parse (the rollout controller warns
/// about it and leaves the workload alone).
pub fn in_use(references: &[Reference<'_>], tags: &BTreeMap<&str, &str>, pushed_ms: &BTreeMap<String, i64>) -> InUse {
    let mut out = InUse::new();
    let mut add = |digest: &str, workload: &str, how: How| {
        out.entry(digest.to_string()).or_default().insert(Use { workload: workload.to_string(), how });
    };
    // Many workloads share a policy and a running tag: parse and select once for each.
    let mut policies: HashMap<&str, Option<Policy>> = HashMap::new();
    let mut selections: HashMap<PolicyAt<'_>, Option<(String, String)>> = HashMap::new();
    let mut candidates: Option<Vec<Candidate>> = None;
    for r in references {
        match (r.digest, r.tag) {
            (Some(d), _) => add(d, r.workload, How::Digest),
            (None, tag) => {
                let t = tag.unwrap_or("latest");
                if let Some(d) = tags.get(t) {
                    add(d, r.workload, How::Tag(t.to_string()));
                }
            }
        }
        let Some(text) = r.rollout.map(str::trim) else { continue };
        let selected = selections.entry((text, r.tag, r.bad)).or_insert_with(|| {
            let policy = policies.entry(text).or_insert_with(|| policy::parse(text).ok().filter(Policy::is_version));
            let policy = policy.as_ref()?;
            let all = candidates.get_or_insert_with(|| candidates_of(tags, pushed_ms));
            let s = if r.bad.is_empty() {
                policy::select(policy, all, r.tag)
            } else {
                let good = |c: &&Candidate| c.digest.as_ref().is_none_or(|d| !r.bad.contains(d));
                let pool: Vec<Candidate> = all.iter().filter(good).cloned().collect();
                policy::select(policy, &pool, r.tag)
            };
            Some((s.tag?, s.digest?))
        });
        if let Some((tag, digest)) = selected {
            add(digest, r.workload, How::Selected { policy: text.to_string(), tag: tag.clone() });
        }
    }
    out
}

/// A policy's text, the tag the workload names and the digests it was rolled back from: what a
/// selection depends on, besides the tags.
type PolicyAt<'a> = (&'a str, Option<&'a str>, &'a [String]);

/// The tags as a version policy sees them.
fn candidates_of(tags: &BTreeMap<&str, &str>, pushed_ms: &BTreeMap<String, i64>) -> Vec<Candidate> {
    tags.iter()
        .map(|(tag, digest)| Candidate {
            tag: tag.to_string(),
            digest: Some(digest.to_string()),
            pushed_at_ms: pushed_ms.get(*digest).copied(),
        })
        .collect()
}

/// Reasons for people, at most `max`: workloads before their Pods (a person changes the
/// Deployment, not the Pod), then "and N more".
pub fn summary<'a>(why: impl IntoIterator<Item = &'a Use>, max: usize) -> String {
    let mut why: Vec<&Use> = why.into_iter().collect();
    why.sort_by_key(|u| u.workload.starts_with("Pod "));
    let mut out: Vec<String> = why.iter().take(max).map(ToString::to_string).collect();
    if why.len() > max {
        out.push(format!("and {} more", why.len() - max));
    }
    out.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(in_use: &InUse, digest: &str) -> Vec<String> {
        in_use.get(digest).into_iter().flatten().map(ToString::to_string).collect()
    }

    #[test]
    fn reasons_name_the_workload_and_what_makes_the_image_in_use() {
        let tags: BTreeMap<&str, &str> = [("v1.4.2", "d142"), ("v1.4.3", "d143"), ("v1.5.0", "d150")].into();
        let refs = [
            Reference {
                workload: "Deployment prod/api",
                tag: Some("v1.4.2"),
                digest: None,
                rollout: Some(" semver:~1.4 "),
                bad: &[],
            },
            Reference {
                workload: "Pod prod/api-1",
                tag: Some("v1.4.2"),
                digest: Some("d142"),
                rollout: None,
                bad: &[],
            },
            Reference { workload: "Job prod/migrate", tag: None, digest: Some("d150"), rollout: None, bad: &[] },
        ];
        let u = in_use(&refs, &tags, &BTreeMap::new());
        assert_eq!(reasons(&u, "d142"), ["Deployment prod/api runs v1.4.2", "Pod prod/api-1 runs it by digest"]);
        assert_eq!(reasons(&u, "d143"), ["Deployment prod/api: semver:~1.4 selects v1.4.3"]);
        assert_eq!(reasons(&u, "d150"), ["Job prod/migrate runs it by digest"]);
        assert!(u["d143"].iter().all(Use::selected) && !u["d142"].iter().any(Use::selected));
    }

    #[test]
    fn summaries_put_workloads_before_pods_and_count_the_rest() {
        let at = |w: &str| Use { workload: w.into(), how: How::Digest };
        let why = [at("Pod a/p-1"), at("Pod a/p-2"), at("StatefulSet a/db"), at("Deployment a/api")];
        assert_eq!(
            summary(&why, 2),
            "StatefulSet a/db runs it by digest; Deployment a/api runs it by digest; and 2 more"
        );
        assert_eq!(summary(&why[..1], 3), "Pod a/p-1 runs it by digest");
    }
}
