//! A record's severity, as ECR reports it: from a CVSS v3 or v4 vector's base score, else the
//! record's own severity field, else `UNDEFINED`.
