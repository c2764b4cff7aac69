//! Matching against the real OSV archives in ../shared/scanning (see its README).
