//! Step 1 and 2 of loading a policy: deserialize into `RawPolicy` (with spans), then validate
//! into [`Policy`]. Every error points at `file:line:column`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::warn::Spans;
use super::{
    DatasetRule, Error, Location, Partner, Policy, Result, DEFAULT_UTILITY_SHARE, FORMAT_VERSION,
    KNOWN_METHODS,
};
use crate::distill::forecast::Verdict;

/// The largest epsilon cap a policy may set: beyond it the guarantee means nothing.
pub(crate) const MAX_EPSILON_CAP: f64 = 100.0;
/// The largest images-per-class limit a policy may set.
pub(crate) const MAX_IPC_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Spanned<i64>,
    name: Spanned<String>,
    description: Option<String>,
    budget: Spanned<RawBudget>,
    distill: Option<Spanned<RawDistill>>,
    privacy: Option<Spanned<RawPrivacy>>,
    ingest: Option<Spanned<RawIngest>>,
    export: Option<Spanned<RawExport>>,
    partners: Option<Vec<Spanned<RawPartner>>>,
    datasets: Option<BTreeMap<String, Spanned<RawDatasetRule>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    dataset_epsilon_cap: Spanned<f64>,
    run_epsilon_cap: Spanned<f64>,
    max_delta: Spanned<f64>,
    max_delta_times_records: Option<Spanned<f64>>,
    utility_share: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDistill {
    methods: Option<Spanned<Vec<Spanned<String>>>>,
    max_images_per_class: Option<Spanned<i64>>,
    min_forecast: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrivacy {
    public_class_counts: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngest {
    require_dicom_deidentification: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExport {
    users: Option<Vec<Spanned<String>>>,
    groups: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartner {
    name: Spanned<String>,
    description: Option<String>,
    client_cert_sha256: Option<Spanned<String>>,
    signing_key: Option<Spanned<String>>,
    datasets: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatasetRule {
    epsilon_cap: Option<Spanned<f64>>,
}

/// Allowed methods, the images-per-class limit and the forecast floor (`[distill]`).
type DistillRules = (Vec<String>, u32, Option<Verdict>);

/// Parse and validate.
pub(crate) fn parse(text: &str, path: &Path) -> Result<Policy> {
    let raw: RawPolicy = toml::from_str(text).map_err(|e| classify(&e, text, path))?;
    Validator { text, path }.policy(raw)
}

/// Turn a toml/serde error into the right variant with its position.
fn classify(e: &toml::de::Error, text: &str, path: &Path) -> Error {
    let span = e.span().unwrap_or(0..0);
    let at = locate(text, span.start, path);
    let msg = e.message().trim().to_string();
    // On a `[table]` header line, the header itself is the key and its parent the table.
    let header = header_at(text, span.start);
    let table = match &header {
        Some(h) => h.rsplit_once('.').map(|(parent, _)| parent.to_string()),
        None => table_at(text, span.start),
    };
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let key = rest.split('`').next().unwrap_or("").to_string();
        let expected = backticked(rest.split_once("expected").map(|x| x.1).unwrap_or(""));
        return Error::UnknownKey {
            at,
            key,
            table,
            expected,
        };
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let key = rest.split('`').next().unwrap_or("").to_string();
        // The span is the table lacking the key: its header line is part of it.
        let table = if span.start == 0 && span.end >= text.len() {
            None
        } else {
            header.or(table)
        };
        return Error::MissingKey { at, key, table };
    }
    if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
        let key = match header {
            Some(h) => h,
            None => {
                let key = key_at(text, span.start).unwrap_or_else(|| "value".into());
                match &table {
                    Some(t) => format!("{t}.{key}"),
                    None => key,
                }
            }
        };
        return Error::WrongType {
            at,
            key,
            message: humanize(&msg),
        };
    }
    Error::Syntax { at, message: msg }
}

/// All backticked words in `s`.
fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, w)| w.to_string())
        .collect()
}

/// The `[table]` / `[[table]]` header in force at byte `pos`.
fn table_at(text: &str, pos: usize) -> Option<String> {
    let before = text.get(..pos.min(text.len()))?;
    before.lines().rev().find_map(|l| {
        let l = l.trim();
        if l.starts_with('[') {
            let name = l.trim_start_matches('[');
            let name = name.split(']').next().unwrap_or("").trim();
            Some(name.to_string())
        } else {
            None
        }
    })
}

/// The table name if the line holding byte `pos` is a `[table]` or `[[table]]` header.
fn header_at(text: &str, pos: usize) -> Option<String> {
    let pos = pos.min(text.len());
    let start = text.get(..pos)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.lines().next()?.trim();
    if !line.starts_with('[') {
        return None;
    }
    let name = line.trim_start_matches('[').split(']').next()?.trim();
    (!name.is_empty()).then(|| name.replace(['"', ' '], ""))
}

/// serde's type words in the user's terms.
fn humanize(msg: &str) -> String {
    let mut out = msg
        .replace("expected f64", "expected a number")
        .replace("expected i64", "expected a whole number")
        .replace("expected a boolean", "expected true or false")
        .replace("expected a sequence", "expected a list [..]")
        .replace("expected a string", "expected a quoted string")
        .replace("invalid type: map", "invalid type: table")
        .replace("invalid type: sequence", "invalid type: list");
    if let Some(i) = out.find("expected struct ") {
        out.truncate(i);
        out.push_str("expected a table");
    }
    out
}

/// The key of the `key = value` line holding byte `pos`.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let pos = pos.min(text.len());
    let start = text.get(..pos)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.lines().next()?;
    let (k, _) = line.split_once('=')?;
    let k = k.trim().trim_matches('"');
    (!k.is_empty()).then(|| k.to_string())
}

/// 1-based line/column of byte `pos`, with a snippet.
pub(crate) fn locate(text: &str, pos: usize, path: &Path) -> Box<Location> {
    let mut pos = pos.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..pos].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("");
    let gutter = format!("{line:>4} | ");
    let snippet = format!(
        "{gutter}{line_text}\n{:>w$}| {}^",
        "",
        " ".repeat(column - 1),
        w = gutter.len() - 2
    );
    Box::new(Location {
        path: path.to_path_buf(),
        line,
        column,
        snippet,
    })
}

/// Locate a byte offset in bytes that are not valid UTF-8.
pub(crate) fn locate_bytes(bytes: &[u8], pos: usize, path: &Path) -> Box<Location> {
    let text = String::from_utf8_lossy(&bytes[..pos.min(bytes.len())]).into_owned();
    locate(&text, text.len(), path)
}

/// The closest candidate to `key` (edit distance ≤ 3), for "did you mean".
pub(crate) fn closest(key: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (levenshtein(key, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A hint for a wrong-type error, from the expected type in the message.
pub(crate) fn type_hint(key: &str, message: &str) -> String {
    let short = key.rsplit('.').next().unwrap_or(key);
    let want = message.rsplit("expected").next().unwrap_or("");
    let example = if want.contains("whole number") {
        let n = if short == "version" { 1 } else { 10 };
        format!("write a whole number without quotes, e.g. `{short} = {n}`")
    } else if want.contains("number") {
        format!("write a number without quotes, e.g. `{short} = 1.0`")
    } else if want.contains("true or false") {
        format!("write `{short} = true` (no quotes)")
    } else if want.contains("list") {
        if key == "partners" {
            "write each partner as its own [[partners]] table (double brackets)".to_string()
        } else {
            format!("write a list, e.g. `{short} = [\"a\", \"b\"]`")
        }
    } else if want.contains("string") {
        format!("write a quoted string, e.g. `{short} = \"text\"`")
    } else if want.contains("table") {
        format!("`{key}` is a table: write it as [{key}] with its keys below")
    } else {
        "see policies/README.md for the type of this key".into()
    };
    format!("{example} (policies/README.md documents every key)")
}

struct Validator<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Validator<'_> {
    fn at(&self, span: Range<usize>) -> Box<Location> {
        locate(self.text, span.start, self.path)
    }

    fn invalid(&self, span: Range<usize>, key: &str, why: String, fix: impl Into<String>) -> Error {
        Error::Invalid {
            at: self.at(span),
            key: key.into(),
            why,
            fix: fix.into(),
        }
    }

    fn epsilon(&self, v: &Spanned<f64>, key: &str) -> Result<f64> {
        let x = *v.get_ref();
        if !x.is_finite() || x <= 0.0 || x > MAX_EPSILON_CAP {
            return Err(self.invalid(
                v.span(),
                key,
                format!("an epsilon cap must be a finite number above 0 and at most {MAX_EPSILON_CAP} (found {x})"),
                format!("set `{}` to a positive number such as 1.0; smaller means stronger privacy", short(key)),
            ));
        }
        Ok(x)
    }

    fn policy(&self, raw: RawPolicy) -> Result<Policy> {
        if *raw.version.get_ref() != i64::from(FORMAT_VERSION) {
            return Err(self.invalid(
                raw.version.span(),
                "version",
                format!(
                    "this build of Retort reads policy format version {FORMAT_VERSION} (found {})",
                    raw.version.get_ref()
                ),
                format!("set `version = {FORMAT_VERSION}` and check the keys against policies/README.md"),
            ));
        }
        let name = raw.name.get_ref().trim().to_string();
        if crate::workspace::validate_name(&name).is_err() {
            return Err(self.invalid(
                raw.name.span(),
                "name",
                format!("{name:?} is not a usable policy name"),
                "use 1-64 characters from a-z, A-Z, 0-9, '-', '_' and '.', starting with a letter or digit",
            ));
        }
        let mut spans = Spans::default();
        let b = raw.budget.get_ref();
        let dataset_epsilon_cap =
            self.epsilon(&b.dataset_epsilon_cap, "budget.dataset_epsilon_cap")?;
        let run_epsilon_cap = self.epsilon(&b.run_epsilon_cap, "budget.run_epsilon_cap")?;
        spans.run_epsilon_cap = Some(self.at(b.run_epsilon_cap.span()));
        let max_delta = *b.max_delta.get_ref();
        if !(max_delta.is_finite() && max_delta > 0.0 && max_delta < 1.0) {
            return Err(self.invalid(
                b.max_delta.span(),
                "budget.max_delta",
                format!("delta is a probability of failure and must be above 0 and below 1 (found {max_delta})"),
                "set `max_delta` to a small number such as 1e-5 (runs must also keep delta below 1/n)",
            ));
        }
        spans.max_delta = Some(self.at(b.max_delta.span()));
        let max_delta_times_records = match &b.max_delta_times_records {
            None => 1.0,
            Some(v) => {
                let x = *v.get_ref();
                if !(x.is_finite() && x > 0.0 && x <= 1.0) {
                    return Err(self.invalid(
                        v.span(),
                        "budget.max_delta_times_records",
                        format!("delta times the record count must stay at most 1 (delta < 1/n); found {x}"),
                        "set `max_delta_times_records` to a number in (0, 1], e.g. 1.0 for delta < 1/n or 0.1 for delta < 1/(10 n)",
                    ));
                }
                x
            }
        };
        let utility_share = match &b.utility_share {
            None => DEFAULT_UTILITY_SHARE,
            Some(v) => {
                let x = *v.get_ref();
                if !(x.is_finite() && (0.0..=0.5).contains(&x)) {
                    return Err(self.invalid(
                        v.span(),
                        "budget.utility_share",
                        format!("the share of a run's epsilon spent on releasing its held-out accuracy must be between 0 and 0.5 (found {x})"),
                        "set `utility_share` to e.g. 0.1 (10 % of each run's epsilon), or 0 to ship packages without utility figures",
                    ));
                }
                x
            }
        };

        let (methods, max_images_per_class, min_forecast) = self.distill(raw.distill.as_ref())?;
        let public_class_counts = raw
            .privacy
            .as_ref()
            .and_then(|p| p.get_ref().public_class_counts.as_ref())
            .is_some_and(|v| *v.get_ref());
        let require_dicom_deidentification = match raw.ingest.as_ref().and_then(|i| i.get_ref().require_dicom_deidentification.as_ref()) {
            Some(v) if !*v.get_ref() => {
                return Err(self.invalid(
                    v.span(),
                    "ingest.require_dicom_deidentification",
                    "Retort always de-identifies DICOM at ingest; a policy may not turn that off".into(),
                    "set `require_dicom_deidentification = true` (or remove the key); identified images must not enter the workspace",
                ))
            }
            _ => true,
        };

        let (export_users, export_groups) = match &raw.export {
            None => (Vec::new(), Vec::new()),
            Some(e) => {
                let e = e.get_ref();
                let users =
                    self.os_names(e.users.as_deref(), "export.users", &mut spans.export_users)?;
                let groups = self.os_names(
                    e.groups.as_deref(),
                    "export.groups",
                    &mut spans.export_groups,
                )?;
                (users, groups)
            }
        };

        let mut partners: Vec<Partner> = Vec::new();
        for p in raw.partners.iter().flatten() {
            let partner = self.partner(p, &partners, &mut spans)?;
            partners.push(partner);
        }

        let mut datasets = Vec::new();
        for (dname, rule) in raw.datasets.iter().flatten() {
            if crate::workspace::validate_name(dname).is_err() {
                return Err(self.invalid(
                    rule.span(),
                    "datasets",
                    format!("{dname:?} is not a valid dataset name"),
                    "write [datasets.NAME] with the dataset's name as `retort datasets` lists it",
                ));
            }
            let epsilon_cap = match &rule.get_ref().epsilon_cap {
                Some(v) => Some(self.epsilon(v, &format!("datasets.{dname}.epsilon_cap"))?),
                None => None,
            };
            spans.datasets.push((dname.clone(), self.at(rule.span())));
            datasets.push(DatasetRule {
                name: dname.clone(),
                epsilon_cap,
            });
        }

        Ok(Policy {
            name,
            description: raw
                .description
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty()),
            dataset_epsilon_cap,
            run_epsilon_cap,
            max_delta,
            max_delta_times_records,
            utility_share,
            methods,
            max_images_per_class,
            min_forecast,
            public_class_counts,
            require_dicom_deidentification,
            export_users,
            export_groups,
            partners,
            datasets,
            spans,
        })
    }

    fn distill(&self, d: Option<&Spanned<RawDistill>>) -> Result<DistillRules> {
        let mut methods: Vec<String> = KNOWN_METHODS.iter().map(|m| m.to_string()).collect();
        let mut ipc = 50;
        let Some(d) = d else {
            return Ok((methods, ipc, None));
        };
        let d = d.get_ref();
        if let Some(list) = &d.methods {
            if list.get_ref().is_empty() {
                return Err(self.invalid(
                    list.span(),
                    "distill.methods",
                    "the list is empty, so no distillation could ever run".into(),
                    "list at least one method, e.g. `methods = [\"gm\", \"dm\"]`",
                ));
            }
            methods.clear();
            for m in list.get_ref() {
                let name = m.get_ref().trim();
                if !KNOWN_METHODS.contains(&name) {
                    return Err(self.invalid(
                        m.span(),
                        "distill.methods",
                        format!("unknown method {name:?}"),
                        format!(
                            "use the methods Retort implements: {}",
                            KNOWN_METHODS.join(", ")
                        ),
                    ));
                }
                if methods.iter().any(|x| x == name) {
                    return Err(self.invalid(
                        m.span(),
                        "distill.methods",
                        format!("method {name:?} is listed twice"),
                        "list each method once",
                    ));
                }
                methods.push(name.to_string());
            }
        }
        if let Some(v) = &d.max_images_per_class {
            let x = *v.get_ref();
            if !(1..=i64::from(MAX_IPC_LIMIT)).contains(&x) {
                return Err(self.invalid(
                    v.span(),
                    "distill.max_images_per_class",
                    format!("must be a whole number from 1 to {MAX_IPC_LIMIT} (found {x})"),
                    "set `max_images_per_class` to the most synthetic images per class a run may produce, e.g. 10",
                ));
            }
            ipc = u32::try_from(x).expect("invariant: checked range");
        }
        let min_forecast = match &d.min_forecast {
            None => None,
            Some(v) => Some(v.get_ref().parse::<Verdict>().map_err(|why| {
                self.invalid(
                    v.span(),
                    "distill.min_forecast",
                    why,
                    "set `min_forecast` to \"poor\", \"fair\" or \"good\" (runs whose utility forecast is below it are refused), or remove the key for no floor",
                )
            })?),
        };
        Ok((methods, ipc, min_forecast))
    }

    fn os_names(
        &self,
        list: Option<&[Spanned<String>]>,
        key: &str,
        spans: &mut Vec<(String, Box<Location>)>,
    ) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for v in list.unwrap_or(&[]) {
            let n = v.get_ref().trim();
            let ok = !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '$'))
                && !n.starts_with('-');
            if !ok {
                return Err(self.invalid(
                    v.span(),
                    key,
                    format!("{n:?} is not a valid OS user or group name"),
                    "write the login or group name as `id -un` / `getent group` shows it",
                ));
            }
            if out.iter().any(|x| x == n) {
                return Err(self.invalid(
                    v.span(),
                    key,
                    format!("{n:?} is listed twice"),
                    "list each name once",
                ));
            }
            spans.push((n.to_string(), self.at(v.span())));
            out.push(n.to_string());
        }
        Ok(out)
    }

    fn partner(
        &self,
        p: &Spanned<RawPartner>,
        seen: &[Partner],
        spans: &mut Spans,
    ) -> Result<Partner> {
        let r = p.get_ref();
        let name = r.name.get_ref().trim().to_string();
        if crate::workspace::validate_name(&name).is_err() {
            return Err(self.invalid(
                r.name.span(),
                "partners.name",
                format!("{name:?} is not a usable partner name"),
                "use 1-64 characters from a-z, A-Z, 0-9, '-', '_' and '.', starting with a letter or digit",
            ));
        }
        if seen.iter().any(|s| s.name == name) {
            return Err(self.invalid(
                r.name.span(),
                "partners.name",
                format!("partner {name:?} is listed twice"),
                "merge the two [[partners]] entries into one",
            ));
        }
        let client_cert_sha256 = match &r.client_cert_sha256 {
            None => None,
            Some(v) => {
                let fp = normalize_fingerprint(v.get_ref()).ok_or_else(|| {
                    self.invalid(
                        v.span(),
                        "partners.client_cert_sha256",
                        format!("{:?} is not a SHA-256 fingerprint (64 hex digits)", v.get_ref()),
                        "use `retort policy add-partner NAME --client-cert cert.pem`, or `openssl x509 -in cert.pem -outform der | sha256sum`",
                    )
                })?;
                if let Some(other) = seen
                    .iter()
                    .find(|s| s.client_cert_sha256.as_deref() == Some(&fp))
                {
                    return Err(self.invalid(
                        v.span(),
                        "partners.client_cert_sha256",
                        format!(
                            "partner {:?} already has this client certificate",
                            other.name
                        ),
                        "give each partner its own client certificate",
                    ));
                }
                Some(fp)
            }
        };
        let signing_key = match &r.signing_key {
            None => None,
            Some(v) => Some(crate::keys::PublicKey::parse(v.get_ref(), "partners.signing_key").map_err(|e| {
                self.invalid(
                    v.span(),
                    "partners.signing_key",
                    format!("not an Ed25519 public key ({e})"),
                    "write the partner's key as base64 of its 32 raw bytes, or use `retort policy add-partner NAME --signing-key key.pem`",
                )
            })?),
        };
        let datasets = match &r.datasets {
            None => None,
            Some(list) => {
                let mut v: Vec<String> = Vec::new();
                for d in list {
                    let n = d.get_ref().trim();
                    if crate::workspace::validate_name(n).is_err() {
                        return Err(self.invalid(
                            d.span(),
                            "partners.datasets",
                            format!("{n:?} is not a valid dataset name"),
                            "list dataset names as `retort datasets` shows them",
                        ));
                    }
                    spans
                        .partner_datasets
                        .push((name.clone(), n.to_string(), self.at(d.span())));
                    v.push(n.to_string());
                }
                Some(v)
            }
        };
        spans.partners.push((name.clone(), self.at(r.name.span())));
        Ok(Partner {
            name,
            description: r.description.clone().filter(|d| !d.trim().is_empty()),
            client_cert_sha256,
            signing_key,
            datasets,
        })
    }
}

fn short(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

/// Lowercase 64-hex fingerprint; accepts `AA:BB:…` (openssl's form) and a `sha256:` prefix.
pub(crate) fn normalize_fingerprint(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s
        .strip_prefix("sha256:")
        .or_else(|| s.strip_prefix("SHA256:"))
        .unwrap_or(s);
    let hex: String = s
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}
