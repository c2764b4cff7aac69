//! A record's severity, as ECR reports it: from a CVSS v3 vector's base score, else a CVSS v4
//! vector's score, else the record's own severity field, else `UNDEFINED`.
//!
//! - CVSS v3.0 and v3.1 vectors are scored with the v3.1 base formula (the base metrics,
//!   weights and equations are the same in both; v3.1 only pinned down `Roundup` so it is free
//!   of floating-point error, which is what v3.0's definition meant). Temporal and
//!   environmental metrics in a vector are accepted and ignored: ECR and NVD report the base
//!   score.
//! - Bands as NVD's v3 scale, which ECR follows: 9.0-10.0 Critical, 7.0-8.9 High, 4.0-6.9
//!   Medium, 0.1-3.9 Low. A score of 0.0 ("None" in CVSS: no impact on C, I or A) is
//!   `INFORMATIONAL`: the record is known and scored, which `UNDEFINED` would hide.
//! - CVSS v4 vectors (a record without a v3 one) are scored by the `cvss` crate (RustSec's: the
//!   specification's MacroVector lookup table and interpolation, checked upstream against Red
//!   Hat's reference calculator; the tests here compare it with that calculator's results), the
//!   threat and environmental metrics a vector carries included, on the same bands. A v3 vector
//!   wins over a v4 one: it is what ECR and NVD report, and sources that publish both keep v3.
//!   CVSS v2 vectors are not used: their scores are not on the v3 bands, and every current source
//!   also has a v3 vector or a word.
//! - Several v3 vectors (the package's `affected[].severity` and the record's): the highest.
//! - Words, first found: the record's `database_specific.severity` (GitHub: `LOW`, `MODERATE`,
//!   `HIGH`, `CRITICAL`), the package's `ecosystem_specific.severity` and
//!   `database_specific.severity`, an `Ubuntu` priority. `MODERATE` and `MEDIUM` are Medium,
//!   `IMPORTANT` (Red Hat) is High; `NEGLIGIBLE` (Ubuntu) and `UNIMPORTANT` (Debian) are
//!   Informational; `UNTRIAGED`, `UNKNOWN` and anything else are not a severity.

use super::{
    Severity,
    osv::{Affected, Record},
};

/// The severity of `record` for the package `affected` describes.
pub fn of(record: &Record, affected: &Affected) -> Severity {
    let best = affected
        .severity
        .iter()
        .chain(&record.severity)
        .filter(|s| s.type_ == "CVSS_V3")
        .filter_map(|s| cvss3_base_score(&s.score))
        .fold(None, |best: Option<f64>, score| Some(best.map_or(score, |b| b.max(score))));
    if let Some(score) = best {
        return band(score);
    }
    let best_v4 = affected
        .severity
        .iter()
        .chain(&record.severity)
        .filter(|s| s.type_ == "CVSS_V4")
        .filter_map(|s| cvss4_score(&s.score))
        .fold(None, |best: Option<f64>, score| Some(best.map_or(score, |b| b.max(score))));
    if let Some(score) = best_v4 {
        return band(score);
    }
    let word = |value: &Option<serde_json::Value>| {
        value.as_ref().and_then(|v| v.get("severity")).and_then(|s| s.as_str()).and_then(from_word)
    };
    word(&record.database_specific)
        .or_else(|| word(&affected.ecosystem_specific))
        .or_else(|| word(&affected.database_specific))
        .or_else(|| {
            affected
                .severity
                .iter()
                .chain(&record.severity)
                .filter(|s| s.type_ == "Ubuntu")
                .find_map(|s| from_word(&s.score))
        })
        .unwrap_or(Severity::Undefined)
}

/// The score of a CVSS v4.0 vector (`CVSS:4.0/AV:N/...`); `None` when it is not a valid one.
pub fn cvss4_score(vector: &str) -> Option<f64> {
    vector.trim().parse::<cvss::v4::Vector>().ok().map(|v| v.score().value())
}

/// The qualitative band of a CVSS v3 base score.
pub fn band(score: f64) -> Severity {
    if score >= 9.0 {
        Severity::Critical
    } else if score >= 7.0 {
        Severity::High
    } else if score >= 4.0 {
        Severity::Medium
    } else if score > 0.0 {
        Severity::Low
    } else {
        Severity::Informational
    }
}

/// A severity word from a record; `None` when it names no level.
pub fn from_word(word: &str) -> Option<Severity> {
    match word.trim().to_ascii_uppercase().as_str() {
        "CRITICAL" => Some(Severity::Critical),
        "HIGH" | "IMPORTANT" => Some(Severity::High),
        "MODERATE" | "MEDIUM" => Some(Severity::Medium),
        "LOW" => Some(Severity::Low),
        "NEGLIGIBLE" | "UNIMPORTANT" | "NONE" | "INFORMATIONAL" => Some(Severity::Informational),
        _ => None,
    }
}

/// The CVSS v3.x base score of a vector (`CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H` ->
/// 9.8), per the v3.1 specification section 7.1; `None` when it is not a valid v3 vector
/// (each base metric exactly once with a defined value, no unknown metric).
pub fn cvss3_base_score(vector: &str) -> Option<f64> {
    let mut parts = vector.trim().split('/');
    if !matches!(parts.next()?, "CVSS:3.0" | "CVSS:3.1") {
        return None;
    }
    // AV, AC, PR, UI, S, C, I, A
    let mut base: [Option<char>; 8] = [None; 8];
    for part in parts {
        let (metric, value) = part.split_once(':')?;
        let mut chars = value.chars();
        let value = chars.next()?;
        if chars.next().is_some() {
            return None;
        }
        let slot = match metric {
            "AV" => 0,
            "AC" => 1,
            "PR" => 2,
            "UI" => 3,
            "S" => 4,
            "C" => 5,
            "I" => 6,
            "A" => 7,
            "E" | "RL" | "RC" | "CR" | "IR" | "AR" | "MAV" | "MAC" | "MPR" | "MUI" | "MS" | "MC" | "MI" | "MA" => {
                continue;
            }
            _ => return None,
        };
        if base[slot].replace(value).is_some() {
            return None;
        }
    }
    let [av, ac, pr, ui, s, c, i, a] = base;
    let changed = match s? {
        'U' => false,
        'C' => true,
        _ => return None,
    };
    let av = match av? {
        'N' => 0.85,
        'A' => 0.62,
        'L' => 0.55,
        'P' => 0.2,
        _ => return None,
    };
    let ac = match ac? {
        'L' => 0.77,
        'H' => 0.44,
        _ => return None,
    };
    let pr = match (pr?, changed) {
        ('N', _) => 0.85,
        ('L', false) => 0.62,
        ('L', true) => 0.68,
        ('H', false) => 0.27,
        ('H', true) => 0.5,
        _ => return None,
    };
    let ui = match ui? {
        'N' => 0.85,
        'R' => 0.62,
        _ => return None,
    };
    let cia = |v: Option<char>| match v? {
        'H' => Some(0.56),
        'L' => Some(0.22),
        'N' => Some(0.0),
        _ => None,
    };
    let (c, i, a) = (cia(c)?, cia(i)?, cia(a)?);
    let iss = 1.0 - (1.0 - c) * (1.0 - i) * (1.0 - a);
    let impact = if changed { 7.52 * (iss - 0.029) - 3.25 * f64::powi(iss - 0.02, 15) } else { 6.42 * iss };
    let exploitability = 8.22 * av * ac * pr * ui;
    Some(if impact <= 0.0 {
        0.0
    } else if changed {
        roundup(f64::min(1.08 * (impact + exploitability), 10.0))
    } else {
        roundup(f64::min(impact + exploitability, 10.0))
    })
}

/// CVSS v3.1 Appendix A: the smallest number with one decimal that is >= the input, computed
/// on integers so that 4.000000000000001 rounds to 4.0, not 4.1.
fn roundup(input: f64) -> f64 {
    let int_input = (input * 100_000.0).round() as i64;
    if int_input % 10_000 == 0 { int_input as f64 / 100_000.0 } else { ((int_input / 10_000) + 1) as f64 / 10.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scanning::osv::SeverityScore;

    #[test]
    fn cvss3_base_scores_of_known_vectors() {
        // Scores as NVD and the FIRST calculator give them.
        for (vector, score) in [
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
            ("CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:C/C:L/I:L/A:N", 4.7),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
            ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", 9.9),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L", 5.3),
            ("CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:H", 7.2),
            ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:H/A:H", 7.4),
            ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:L/I:L/A:L", 5.6),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8),
            ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:N", 8.1),
            ("CVSS:3.1/AV:A/AC:H/PR:H/UI:N/S:U/C:H/I:N/A:N", 4.2),
            ("CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", 1.6),
            ("CVSS:3.1/AV:L/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 7.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
            ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
            ("CVSS:3.0/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
            // Temporal and environmental metrics do not change the base score.
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:U/RL:O/RC:R/CR:L/MAV:P", 9.8),
        ] {
            assert_eq!(cvss3_base_score(vector), Some(score), "{vector}");
        }
    }

    #[test]
    fn cvss3_invalid_vectors_have_no_score() {
        for vector in [
            "",
            "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:2.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:X",
            "CVSS:3.1/AV:N/AV:L/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/ZZ:1",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:X/C:H/I:H/A:H",
            "CVSS:3.1/AV:NN/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        ] {
            assert_eq!(cvss3_base_score(vector), None, "{vector}");
        }
    }

    #[test]
    fn roundup_is_free_of_float_error() {
        assert_eq!(roundup(4.000_000_000_000_001), 4.0);
        assert_eq!(roundup(4.0), 4.0);
        assert_eq!(roundup(4.02), 4.1);
        assert_eq!(roundup(4.1), 4.1);
        assert_eq!(roundup(0.0), 0.0);
    }

    #[test]
    fn bands() {
        for (score, severity) in [
            (10.0, Severity::Critical),
            (9.0, Severity::Critical),
            (8.9, Severity::High),
            (7.0, Severity::High),
            (6.9, Severity::Medium),
            (4.0, Severity::Medium),
            (3.9, Severity::Low),
            (0.1, Severity::Low),
            (0.0, Severity::Informational),
        ] {
            assert_eq!(band(score), severity, "{score}");
        }
    }

    fn score(type_: &str, score: &str) -> SeverityScore {
        SeverityScore { type_: type_.into(), score: score.into() }
    }

    fn record(severity: Vec<SeverityScore>, word: Option<&str>) -> Record {
        Record {
            id: "X-1".into(),
            severity,
            database_specific: word.map(|w| serde_json::json!({ "severity": w })),
            ..Record::default()
        }
    }

    #[test]
    fn the_vector_wins_over_the_word() {
        // GHSA-29mw-wpgm-hmr9: 5.3 and MODERATE agree; a disagreeing word loses.
        let r = record(vec![score("CVSS_V3", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L")], Some("CRITICAL"));
        assert_eq!(of(&r, &Affected::default()), Severity::Medium);
    }

    #[test]
    fn the_highest_of_several_vectors() {
        let r = record(
            vec![
                score("CVSS_V3", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L"),
                score("CVSS_V3", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
                score("CVSS_V3", "garbage"),
            ],
            None,
        );
        assert_eq!(of(&r, &Affected::default()), Severity::Critical);
    }

    /// Scores from FIRST and Red Hat's reference calculator (cvss40.js of
    /// github.com/RedHatProductSecurity/cvss-v4-calculator, run with node on these vectors).
    #[test]
    fn cvss4_scores_match_the_reference_calculator() {
        for (vector, expected) in [
            ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", 9.3),
            ("CVSS:4.0/AV:L/AC:L/AT:N/PR:L/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", 8.5),
            ("CVSS:4.0/AV:N/AC:H/AT:P/PR:L/UI:A/VC:L/VI:N/VA:N/SC:N/SI:N/SA:N", 2.0),
            ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:N/SI:N/SA:N", 0.0),
            ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:P/VC:L/VI:L/VA:N/SC:N/SI:N/SA:N/E:U", 1.3),
        ] {
            assert_eq!(cvss4_score(vector), Some(expected), "{vector}");
        }
        assert_eq!(cvss4_score("CVSS:4.0/AV:N"), None, "incomplete");
        assert_eq!(cvss4_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"), None, "not v4");
    }

    #[test]
    fn a_v4_vector_alone_is_scored_and_a_v3_one_wins() {
        let v4 = score("CVSS_V4", "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N");
        assert_eq!(of(&record(vec![v4.clone()], Some("LOW")), &Affected::default()), Severity::Critical);
        let v3 = score("CVSS_V3", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L");
        assert_eq!(of(&record(vec![v4, v3], None), &Affected::default()), Severity::Medium);
        let broken = score("CVSS_V4", "CVSS:4.0/garbage");
        assert_eq!(of(&record(vec![broken], Some("HIGH")), &Affected::default()), Severity::High, "else the word");
    }

    proptest::proptest! {
        /// berth's own v3.1 base score agrees with RustSec's independent implementation on
        /// every base vector drawn.
        #[test]
        fn cvss3_agrees_with_an_independent_implementation(
            av in 0usize..4, ac in 0usize..2, pr in 0usize..3, ui in 0usize..2, s in 0usize..2,
            c in 0usize..3, i in 0usize..3, a in 0usize..3,
        ) {
            let vector = format!(
                "CVSS:3.1/AV:{}/AC:{}/PR:{}/UI:{}/S:{}/C:{}/I:{}/A:{}",
                ["N", "A", "L", "P"][av], ["L", "H"][ac], ["N", "L", "H"][pr], ["N", "R"][ui],
                ["U", "C"][s], ["H", "L", "N"][c], ["H", "L", "N"][i], ["H", "L", "N"][a],
            );
            let theirs = vector.parse::<cvss::v3::Vector>().unwrap().score().value();
            proptest::prop_assert_eq!(cvss3_base_score(&vector), Some(theirs), "{}", vector);
        }
    }

    #[test]
    fn words() {
        for (word, severity) in [
            ("LOW", Some(Severity::Low)),
            ("MODERATE", Some(Severity::Medium)),
            ("medium", Some(Severity::Medium)),
            ("HIGH", Some(Severity::High)),
            ("Important", Some(Severity::High)),
            ("CRITICAL", Some(Severity::Critical)),
            ("negligible", Some(Severity::Informational)),
            ("unimportant", Some(Severity::Informational)),
            ("untriaged", None),
            ("", None),
        ] {
            assert_eq!(from_word(word), severity, "{word}");
        }
    }

    #[test]
    fn word_sources_in_order() {
        let mut affected = Affected {
            ecosystem_specific: Some(serde_json::json!({ "severity": "LOW" })),
            database_specific: Some(serde_json::json!({ "severity": "CRITICAL" })),
            ..Affected::default()
        };
        assert_eq!(of(&record(vec![], Some("HIGH")), &affected), Severity::High);
        assert_eq!(of(&record(vec![], None), &affected), Severity::Low);
        affected.ecosystem_specific = None;
        assert_eq!(of(&record(vec![], None), &affected), Severity::Critical);
        let ubuntu = record(vec![score("Ubuntu", "medium")], None);
        assert_eq!(of(&ubuntu, &Affected::default()), Severity::Medium);
        assert_eq!(of(&record(vec![], Some("UNKNOWN")), &Affected::default()), Severity::Undefined);
        assert_eq!(of(&Record::default(), &Affected::default()), Severity::Undefined);
    }

    #[test]
    fn the_package_vector_counts() {
        let affected = Affected {
            severity: vec![score("CVSS_V3", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H")],
            ..Affected::default()
        };
        assert_eq!(of(&record(vec![], Some("LOW")), &affected), Severity::Critical);
    }
}
